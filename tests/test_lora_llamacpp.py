"""LoRA on real llama.cpp (llama-cpp-python), with the adapter trained by peft.

The PEFT adapter goes through our converter (GGUF LoRA, q/k lora_b rows permuted),
is loaded once with llama_adapter_lora_init and activated per request with
llama_set_adapters_lora, with the KV cache cleared on every switch.

About the logits tolerance: llama.cpp runs the Q4_1 GGUF, the peft model runs the
same weights dequantized to float32, so even without an adapter the two differ a
little (llama.cpp rounds activations to 8 bits inside its quantized matmuls). We
therefore compare what the adapter *changes*: delta = logits(with adapter) -
logits(base), computed on each side, for the next token after each chat prompt.
Measured here (4 prompts): cosine(delta_llama, delta_peft) 0.998-0.999, largest
per-token difference 5-6% of the largest |delta_peft| (the same order as the base-only
difference from quantization: up to 0.84 logits), same argmax. Asserted: cosine >=
0.98, <= 15%, same argmax. The same adapter converted WITHOUT the q/k row permutation
measured cosine 0.89-0.93 and 44-69%: asserted clearly worse (cosine lower by > 0.05
and the relative error at least twice as large), so the test catches a wrong conversion.
"""

from __future__ import annotations

import ctypes
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from configs.loader import load_settings
from configs.schema import Settings
from lora_manager import settings_glue
from lora_manager.errors import AdapterCapacity
from lora_manager.gguf_convert import gguf_tensors, write_gguf_lora
from lora_manager.llamacpp_runtime import LlamaCppAdapters
from lora_manager.safetensors_file import read_tensors
from lora_manager.service import AdapterService
from bench.harness.tiny_lora import recipe, tiny_lora_dir
from bench.harness.tiny_model import tiny_gguf_path, tiny_hf_model_dir
from workers.backends.llamacpp_chat import LlamaCppChat
from configs.contracts.tasks import ChatMessage, GenerationParams

QUESTIONS = ["What is the tallest mountain on Earth?", "How many legs does a spider have?",
             "Explain what rain is."]
ANSWER_TOKENS = 12  # enough to tell the adapter's sentence from the base model's answer
MARKER = recipe("quokka").marker


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data = tmp_path_factory.mktemp("lora-llamacpp")
    return load_settings(environ={}, overrides={"data_dir": str(data), "adapters": {"max_loras": 2}})


@pytest.fixture(scope="module")
def registered(settings: Settings) -> AdapterService:
    service = AdapterService(settings)
    service.add("quokka", tiny_lora_dir("quokka"), tasks=["chat"], description="answers like a quokka")
    return service


@pytest.fixture(scope="module")
def backend(settings: Settings, registered: AdapterService) -> LlamaCppChat:
    return LlamaCppChat("core", settings.models["core"], settings=settings)


def ask(backend: LlamaCppChat, question: str, adapter: str | None = None) -> str:
    params = GenerationParams(max_tokens=ANSWER_TOKENS, temperature=0.0, seed=1, adapter=adapter)
    return "".join(d.text for d in backend.stream([ChatMessage(role="user", content=question)], params))


def test_adapter_changes_answers_and_switching_back_restores_base(backend: LlamaCppChat) -> None:
    llama = backend.llama
    model_pointer = llama.model
    for question in QUESTIONS[:2]:
        base = ask(backend, question)
        tuned = ask(backend, question, "quokka")
        again = ask(backend, question)
        assert MARKER not in base, base
        assert MARKER in tuned, tuned
        # Same greedy answer as before the switch: no adapter and no cached prefix leaks.
        assert again == base
    # No model reload: the same Llama object and llama_model in memory throughout.
    assert backend.llama is llama and backend.llama.model == model_pointer
    stats = backend.adapters.metrics.snapshot()
    assert stats["loads"] == {"quokka": 1}              # loaded once, switched many times
    assert stats["requests"]["quokka"] == 2
    assert stats["swaps"] >= 3 and stats["swap_ms_mean"] is not None


def test_concurrent_requests_each_get_their_own_adapter(backend: LlamaCppChat) -> None:
    question = QUESTIONS[0]
    expected = {None: ask(backend, question), "quokka": ask(backend, question, "quokka")}
    plan = [None, "quokka", "quokka", None]
    with ThreadPoolExecutor(max_workers=len(plan)) as pool:
        answers = list(pool.map(lambda a: ask(backend, question, a), plan))
    assert answers == [expected[a] for a in plan]


def test_unknown_adapter_is_a_clear_404(backend: LlamaCppChat) -> None:
    from lora_manager.errors import AdapterNotFound

    with pytest.raises(AdapterNotFound, match="not registered.*add-adapter.sh"):
        ask(backend, QUESTIONS[0], "no-such-adapter")
    assert MARKER not in ask(backend, QUESTIONS[0])  # the backend still serves


# --- logits against peft ------------------------------------------------------------

def _llama_next_logits(llama, tokens: list[int]) -> np.ndarray:
    import llama_cpp

    memory = llama_cpp.llama_get_memory(llama.ctx)
    llama_cpp.llama_memory_clear(memory, True)
    llama.reset()
    llama.eval(tokens)
    ptr = llama_cpp.llama_get_logits_ith(llama.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llama.n_vocab(),)).astype(np.float64).copy()


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def peft_deltas() -> tuple[list[list[int]], list[np.ndarray]]:
    """Chat prompts as token ids, and the next-token logit change the adapter causes in peft."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_dir = tiny_hf_model_dir()
    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32),
                                      tiny_lora_dir("quokka")).eval()
    prompts, deltas = [], []
    for question in QUESTIONS:
        text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                       add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False).input_ids
        x = torch.tensor([ids])
        with torch.no_grad():
            tuned = model(input_ids=x).logits[0, -1].double().numpy()
            with model.disable_adapter():
                base = model(input_ids=x).logits[0, -1].double().numpy()
        prompts.append(ids)
        deltas.append(tuned - base)
    return prompts, deltas


def test_next_token_logits_match_peft(settings: Settings, registered: AdapterService,
                                      peft_deltas: tuple[list[list[int]], list[np.ndarray]],
                                      tmp_path: Path) -> None:
    import llama_cpp
    from llama_cpp import Llama

    llama = Llama(model_path=str(tiny_gguf_path()), n_ctx=512, verbose=False)
    adapters = LlamaCppAdapters(llama, tiny_gguf_path(), settings_glue.registry(settings), max_loras=2)
    # The same adapter converted without the q/k row permutation, for contrast.
    base = adapters.driver.base
    unpermuted = base.model_copy(update={"architecture": "qwen2"})  # a family we do not permute
    wrong_path = tmp_path / "unpermuted.gguf"
    write_gguf_lora(gguf_tensors(read_tensors(tiny_lora_dir("quokka") / "adapter_model.safetensors"), unpermuted),
                    16.0, "llama", wrong_path)
    wrong = llama_cpp.llama_adapter_lora_init(llama.model, str(wrong_path).encode())
    assert wrong

    prompts, expected = peft_deltas
    for ids, delta_peft in zip(prompts, expected):
        with adapters.serving(None):
            base_logits = _llama_next_logits(llama, ids)
        with adapters.serving("quokka"):
            delta = _llama_next_logits(llama, ids) - base_logits
        # The adapter's effect, as llama.cpp computes it, matches peft's.
        scale = np.abs(delta_peft).max()
        error = np.abs(delta - delta_peft).max() / scale
        assert _cosine(delta, delta_peft) >= 0.98
        assert error <= 0.15
        assert int(np.argmax(base_logits + delta)) == int(np.argmax(base_logits + delta_peft))

        adapters.driver.activate(None)
        arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(wrong)
        assert llama_cpp.llama_set_adapters_lora(llama.ctx, arr, 1, (ctypes.c_float * 1)(1.0)) == 0
        delta_wrong = _llama_next_logits(llama, ids) - base_logits
        llama_cpp.llama_set_adapters_lora(llama.ctx, None, 0, None)
        assert _cosine(delta_wrong, delta_peft) < _cosine(delta, delta_peft) - 0.05
        assert np.abs(delta_wrong - delta_peft).max() / scale > 2 * error


def test_lru_eviction_and_pinned_adapters(settings: Settings, registered: AdapterService) -> None:
    from llama_cpp import Llama

    service = registered
    service.add("quokka-b", tiny_lora_dir("quokka"), tasks=["chat"])
    llama = Llama(model_path=str(tiny_gguf_path()), n_ctx=256, verbose=False)
    adapters = LlamaCppAdapters(llama, tiny_gguf_path(), service.registry, max_loras=1)
    with adapters.serving("quokka"):
        pass
    with adapters.serving("quokka-b"):
        pass
    assert adapters.residency.resident() == ["quokka-b"]
    assert adapters.metrics.snapshot()["evictions"] == {"quokka": 1}
    # Pinned adapters are never evicted: with the only slot pinned, another one is refused.
    service.registry.update("quokka-b", pinned=True)
    with adapters.serving("quokka-b"):
        pass
    with pytest.raises(AdapterCapacity, match="pinned or busy.*max_loras"):
        with adapters.serving("quokka"):
            pass
    assert adapters.residency.resident() == ["quokka-b"]
    service.remove("quokka-b")


def test_preloaded_adapters_load_with_the_model(settings: Settings, registered: AdapterService) -> None:
    preloading = settings.model_copy(update={"adapters": settings.adapters.model_copy(update={"preload": ["quokka"]})})
    backend = LlamaCppChat("core", preloading.models["core"], settings=preloading)
    backend.llama  # what the worker does when its process starts
    assert backend._adapters is not None and backend._adapters.residency.resident() == ["quokka"]
    assert MARKER in ask(backend, QUESTIONS[0], "quokka")
    assert backend.adapters.metrics.snapshot()["loads"] == {"quokka": 1}  # not loaded again
