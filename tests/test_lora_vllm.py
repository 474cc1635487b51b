"""LoRA on a real vLLM server (CPU build, started once per session by
tests/support/vllm_server.py with --enable-lora --max-loras 2 and runtime LoRA
updating): runtime load, serving as `model`, unload, LRU eviction, restart recovery."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from lora_manager.base_model import BaseModelSpec
from lora_manager.drivers.vllm import VllmAdapterDriver
from lora_manager.errors import AdapterRefused
from lora_manager.registry import AdapterRegistry
from lora_manager.residency import Residency
from lora_manager.validation import ValidationLimits
from bench.harness.tiny_lora import recipe, tiny_lora_dir
from tests.support.vllm_server import SERVED_NAME, VllmServer, vllm_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.vllm
QUESTION = "What is the tallest mountain on Earth?"
MARKER = recipe("quokka").marker
SERVER_MAX_LORAS = 2  # what the session server was started with


@pytest.fixture(scope="module")
def registry(vllm_server: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> AdapterRegistry:
    """Registered against the base the server reports (its config.json), not a name."""
    reg = AdapterRegistry(tmp_path_factory.mktemp("lora-vllm") / "adapters")
    base = BaseModelSpec.from_hf_config(Path(vllm_server.model_dir))
    limits = ValidationLimits(max_rank=16, max_size_bytes=256 * 2**20,
                              supported_modules=frozenset({"q_proj", "k_proj", "v_proj", "o_proj"}))
    for name in ("quokka", "quokka-b", "quokka-c"):  # three slots' worth; same trained weights
        reg.add(name, tiny_lora_dir("quokka"), base, limits)
    return reg


@pytest.fixture
def driver(vllm_server: VllmServer, registry: AdapterRegistry) -> VllmAdapterDriver:
    drv = VllmAdapterDriver(vllm_server.base_url, registry)
    yield drv
    for name in drv.server_resident() or ():  # leave the shared server as we found it
        drv.unload(name)
    drv.close()


def ask(server: VllmServer, model: str) -> str:
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}],
                                           max_tokens=16, temperature=0.0)
    return reply.choices[0].message.content or ""


def test_runtime_load_serves_as_model_and_unloads(vllm_server: VllmServer, driver: VllmAdapterDriver,
                                                  registry: AdapterRegistry) -> None:
    base_answer = ask(vllm_server, SERVED_NAME)
    assert MARKER not in base_answer
    driver.load(registry.get("quokka"))
    assert driver.server_resident() == {"quokka"}
    assert MARKER in ask(vllm_server, "quokka")
    assert ask(vllm_server, SERVED_NAME) == base_answer  # the base is untouched
    driver.unload("quokka")
    assert driver.server_resident() == set()
    with pytest.raises(openai.NotFoundError):
        ask(vllm_server, "quokka")


def test_lru_eviction_with_two_slots_and_three_adapters(vllm_server: VllmServer, driver: VllmAdapterDriver,
                                                        registry: AdapterRegistry) -> None:
    residency = Residency(driver, registry, max_loras=SERVER_MAX_LORAS)
    for name in ("quokka", "quokka-b"):
        with residency.use(name):
            assert MARKER in ask(vllm_server, name)
    with residency.use("quokka"):  # quokka is now the most recently used
        pass
    with residency.use("quokka-c"):
        assert MARKER in ask(vllm_server, "quokka-c")
    assert residency.resident() == ["quokka", "quokka-c"]
    assert driver.server_resident() == {"quokka", "quokka-c"}
    assert residency.metrics.snapshot()["evictions"] == {"quokka-b": 1}
    # A request holding its adapter keeps it resident: the other one is evicted instead.
    with residency.use("quokka-c"):
        with residency.use("quokka-b"):
            assert set(residency.resident()) == {"quokka-b", "quokka-c"}


def test_restart_is_noticed_and_resident_adapters_are_reloaded(vllm_server: VllmServer,
                                                               driver: VllmAdapterDriver,
                                                               registry: AdapterRegistry) -> None:
    residency = Residency(driver, registry, max_loras=SERVER_MAX_LORAS)
    residency.load("quokka")
    vllm_server.restart()
    assert driver.server_resident() == set()   # runtime adapters are gone after a restart
    with residency.use("quokka"):               # noticed (GET /v1/models) and reloaded
        assert MARKER in ask(vllm_server, "quokka")
    assert residency.metrics.snapshot()["reloads_after_restart"] == 1


def test_rank_above_server_max_is_refused_before_loading(vllm_server: VllmServer, tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "adapters")
    base = BaseModelSpec.from_hf_config(Path(vllm_server.model_dir))
    tight = ValidationLimits(max_rank=4, max_size_bytes=2**30, supported_modules=frozenset({"q_proj", "k_proj",
                                                                                             "v_proj", "o_proj"}))
    with pytest.raises(AdapterRefused, match="max LoRA rank 4"):
        reg.add("quokka", tiny_lora_dir("quokka"), base, tight)
