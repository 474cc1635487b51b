"""A production twin of the core model: a tiny Qwen3-MoE, built and trained at test time.

Same architecture class as Qwen3-30B-A3B (transformers `Qwen3MoeForCausalLM`: routed
experts, q/k norms, GQA), shrunk to 2 layers of 4 experts (top-2). head_dim is 64:
vLLM's CPU attention refuses 16. The tokenizer is SmolLM2's (ChatML, like Qwen) plus
the tokens Qwen3 relies on: `<think>`/`</think>` (the qwen3 reasoning parser) and
`<tool_call>`/`</tool_call>` (the hermes tool parser checks the vocabulary for them).
Its chat template follows Qwen3's hybrid one: with `enable_thinking: false` it writes
an empty think block into the prompt, so the model answers at once.

A few seconds of training teach it, for the questions below:
- thinking on: `<think>` + a short reasoning + `</think>` + the answer;
- thinking off (empty think block in the prompt): the answer only;
- INSTRUCT_QUESTION, thinking on: the answer with no think block at all, as
  Qwen3-30B-A3B-Instruct-2507 does (the model of the issue's item 2).

The folder is laid out as a Hugging Face hub cache (HF_HOME/hub/models--.../snapshots/
<commit>), so vLLM serves it by repo id and pinned revision with HF_HUB_OFFLINE=1, as
the production servers do, and reports the repo id (not a folder) as its root.
Built once into tests/.cache/ (atomically) and reused.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from bench.harness.cache_build import build_once
from bench.harness.tiny_model import CACHE_DIR, tiny_hf_model_dir

TWIN_REPO = "appliance-twin/qwen3-moe-tiny"
SERVED_NAME = "qwen3-30b-a3b"   # what the production core is served as
EXTRA_TOKENS = ["<think>", "</think>", "<tool_call>", "</tool_call>"]
ARCH = dict(hidden_size=64, intermediate_size=128, moe_intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, head_dim=64, num_experts=4,
            num_experts_per_tok=2, max_position_embeddings=4096, rope_theta=1_000_000.0)
# Stops early once every target token is learnt (loss below STOP_LOSS).
TRAINING = dict(steps=400, learning_rate=1e-2, seed=0)
STOP_LOSS = 0.02
BUILD_VERSION = "1"  # bump when the recipe changes: the cache key includes it

# question -> (reasoning, answer)
QA = {
    "What is the capital of France?": ("The user asks about France. Its capital is Paris.", "Paris is the capital."),
    "How much is two plus two?": ("Two plus two makes four.", "Two plus two is four."),
}
INSTRUCT_QUESTION = "Name a primary color."
INSTRUCT_ANSWER = "Red is a primary color."

# Qwen3's hybrid template, reduced to what the twin needs (system, user, assistant,
# tools in the system turn, the enable_thinking switch).
CHAT_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (tools and loop.first and message['role'] == 'system') %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)


def _key() -> str:
    material = json.dumps({"arch": ARCH, "training": TRAINING, "qa": QA, "instruct": [INSTRUCT_QUESTION, INSTRUCT_ANSWER],
                           "template": CHAT_TEMPLATE, "tokens": EXTRA_TOKENS, "version": BUILD_VERSION}, sort_keys=True)
    return hashlib.sha1(material.encode()).hexdigest()


def twin_revision() -> str:
    """The twin's 'commit': a hash of everything that shapes it (40 hex, like a pin)."""
    return _key()


def twin_hf_home() -> Path:
    return CACHE_DIR / f"twin-hf-home-{_key()[:12]}"


def _snapshot(hf_home: Path) -> Path:
    return hf_home / "hub" / f"models--{TWIN_REPO.replace('/', '--')}" / "snapshots" / twin_revision()


def _examples(tok) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, target ids) for every behaviour the twin must show."""
    def prompt(question: str, thinking: bool) -> list[int]:
        text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                       add_generation_prompt=True, enable_thinking=thinking)
        return tok(text, add_special_tokens=False).input_ids

    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False).input_ids

    out = []
    for question, (reasoning, answer) in QA.items():
        out.append((prompt(question, True), ids(f"<think>\n{reasoning}\n</think>\n\n{answer}<|im_end|>")))
        out.append((prompt(question, False), ids(f"{answer}<|im_end|>")))
    out.append((prompt(INSTRUCT_QUESTION, True), ids(f"{INSTRUCT_ANSWER}<|im_end|>")))
    out.append((prompt(INSTRUCT_QUESTION, False), ids(f"{INSTRUCT_ANSWER}<|im_end|>")))
    return out


def _build(target: Path) -> None:
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(TRAINING["seed"])
    tok = AutoTokenizer.from_pretrained(tiny_hf_model_dir())
    tok.add_special_tokens({"additional_special_tokens": EXTRA_TOKENS})
    tok.chat_template = CHAT_TEMPLATE
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    config = Qwen3MoeConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=eos,
                            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos,
                            tie_word_embeddings=False, norm_topk_prob=True, decoder_sparse_step=1,
                            mlp_only_layers=[], torch_dtype="float32", **ARCH)
    model = Qwen3MoeForCausalLM(config)
    rows = _examples(tok)
    width = max(len(p) + len(t) for p, t in rows)
    pad = config.pad_token_id
    input_ids = torch.tensor([p + t + [pad] * (width - len(p) - len(t)) for p, t in rows])
    attention = torch.tensor([[1] * (len(p) + len(t)) + [0] * (width - len(p) - len(t)) for p, t in rows])
    labels = torch.tensor([[-100] * len(p) + t + [-100] * (width - len(p) - len(t)) for p, t in rows])
    optimizer = torch.optim.AdamW(model.parameters(), lr=TRAINING["learning_rate"])
    model.train()
    started = time.perf_counter()
    # The vocabulary projection dominates the cost: apply it to the target positions only.
    predict = labels[:, 1:] != -100
    wanted = labels[:, 1:][predict]
    steps = 0
    for steps in range(1, TRAINING["steps"] + 1):
        hidden = model.model(input_ids=input_ids, attention_mask=attention).last_hidden_state[:, :-1]
        loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[predict]), wanted)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if loss.item() < STOP_LOSS:
            break
    model.eval()
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=eos, pad_token_id=pad)
    model.save_pretrained(target, safe_serialization=True)
    tok.save_pretrained(target)
    # Portable for vLLM's own transformers (as bench/harness/tiny_model.py does).
    tc_path = target / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    tc["chat_template"] = CHAT_TEMPLATE
    tc_path.write_text(json.dumps(tc, indent=2, ensure_ascii=False))
    (target / "training.json").write_text(json.dumps(
        {"final_loss": float(loss.detach()), "steps": steps, "train_seconds": round(time.perf_counter() - started, 1)}))
    for path in target.iterdir():
        path.chmod(0o644)


def twin_model_dir() -> Path:
    """The twin's snapshot folder (built and trained on first call, ~1 min on 2 cores)."""
    hf_home = build_once(twin_hf_home(), lambda home: (_snapshot(home) / "training.json").is_file(),
                         _build_hf_home)
    return _snapshot(hf_home)


def _build_hf_home(hf_home: Path) -> None:
    """An HF cache folder holding the twin as the hub would: snapshot plus refs/main."""
    snapshot = _snapshot(hf_home)
    snapshot.parent.mkdir(parents=True)
    _build(snapshot)
    repo_dir = snapshot.parents[1]
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(twin_revision())


if __name__ == "__main__":
    path = twin_model_dir()
    print(path, (path / "training.json").read_text())
