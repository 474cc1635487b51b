"""The production stack's wiring from the VRAM plan: what the owner's first
`docker compose up` (and every reboot after it) depends on.

Docker cannot run here; compose.yaml is interpolated with a .env made from
.env.example (the same rules docker compose applies, tests/test_compose.py) and the
app's settings are loaded from the environment compose gives its containers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from configs.loader import load_settings
from core_agent.ops.vram_plan import (
    DEFAULT_STACK_FILE,
    START_ORDER,
    app_context_env,
    load_stack,
    plan_stack,
    vllm_args,
)
from tests.test_compose import COMPOSE_FILE, example_env, flag_values, interpolate

CORE = "vllm-core"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    return interpolate(raw, example_env())["services"]


@pytest.fixture(scope="module")
def plan():
    return plan_stack(load_stack())


def test_servers_start_core_then_memory_then_code_then_vision(services: dict[str, Any]) -> None:
    for before, after in zip(START_ORDER, START_ORDER[1:]):
        assert services[after]["depends_on"] == {before: {"condition": "service_healthy"}}, after
    assert "depends_on" not in services[START_ORDER[0]]
    # Memory (embeddings and RAG) never waits for the vision server.
    for worker in ("worker-embed", "worker-rag"):
        assert "vllm-vision" not in services[worker]["depends_on"]
    assert START_ORDER.index("vllm-embed") < START_ORDER.index("vllm-vision")


def test_every_kv_cache_is_sized_up_front_from_the_plan(services: dict[str, Any], plan) -> None:
    """No memory profiling at start-up: the reboot race (all servers starting at once)
    cannot make one server count another's allocations as its own."""
    for s in plan.services:
        args = flag_values(services[s.service]["command"])
        assert int(args["kv-cache-memory-bytes"]) == max(s.kv_cache_bytes, 64 * 2**20), s.service
    # By hand for the core: 96 KiB/token x 32,768 tokens x 4 sequences = 12 GiB.
    assert int(flag_values(services[CORE]["command"])["kv-cache-memory-bytes"]) == 12_884_901_888


def test_model_servers_run_offline_with_pinned_revisions_and_persistent_caches(services: dict[str, Any],
                                                                                plan) -> None:
    for s in plan.services:
        svc = services[s.service]
        env = svc["environment"]
        assert env["HF_HUB_OFFLINE"] == "1" and env["HF_HOME"] == "/models/hf", s.service
        # torch.compile / Triton / vLLM caches in the models volume survive a recreate.
        for key in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
            assert env[key].startswith("/models/"), (s.service, key)
        assert "models:/models" in svc["volumes"]
        assert flag_values(svc["command"])["revision"] == s.revision
        # Weights are fetched beforehand: the health check does not wait an hour.
        period = svc["healthcheck"]["start_period"]
        assert period.endswith("m") and int(period[:-1]) <= 20, s.service


def test_unpinned_models_are_pinned_from_the_pins_file(tmp_path: Path) -> None:
    stack_file = tmp_path / "gpu-stack.yaml"
    stack_file.write_text(DEFAULT_STACK_FILE.read_text())
    unpinned = plan_stack(load_stack(stack_file)).service(CORE)
    assert unpinned.revision == "main" and any("fetch-models.sh --pin" in w for w in unpinned.warnings)
    commit = "0123456789abcdef0123456789abcdef01234567"
    (tmp_path / "model-pins.yaml").write_text(yaml.safe_dump({"revisions": {"Qwen/Qwen3-30B-A3B-FP8": commit}}))
    pinned = plan_stack(load_stack(stack_file)).service(CORE)
    assert pinned.revision == commit and f"--revision={commit}" in vllm_args(pinned)
    assert not any("pinned" in w for w in pinned.warnings)


def test_the_apps_context_is_the_planned_max_model_len(services: dict[str, Any], plan) -> None:
    """One source: the core's context in the app is the server's --max-model-len."""
    expected = app_context_env(plan)
    assert expected["APPLIANCE_MODELS__CORE__N_CTX"] == str(plan.service(CORE).knobs.max_model_len)
    for name in ("api", "worker-chat", "worker-code"):
        env = services[name]["environment"]
        assert {k: env[k] for k in expected} == expected, name
        settings = load_settings(environ={k: str(v) for k, v in env.items() if k.startswith("APPLIANCE_MODELS__")}
                                 | {"APPLIANCE_PROFILE": "gpu"})
        assert settings.models["core"].n_ctx == plan.service(CORE).knobs.max_model_len, name
        assert settings.models["code"].n_ctx == plan.service("vllm-code").knobs.max_model_len, name


def test_a_90k_core_context_reaches_both_vllm_and_the_app(tmp_path: Path) -> None:
    raw = yaml.safe_load(DEFAULT_STACK_FILE.read_text())
    # 90,112 x 4 sequences would need 33 GiB of KV: 2 sequences at full length fit.
    raw["services"][CORE].update(max_model_len=90112, max_num_seqs=2)
    stack_file = tmp_path / "gpu-stack.yaml"
    stack_file.write_text(yaml.safe_dump(raw))
    plan = plan_stack(load_stack(stack_file))
    assert plan.fits
    core = flag_values(vllm_args(plan.service(CORE)))
    assert core["max-model-len"] == "90112"
    # By hand: 90,112 / 32,768 = 2.75 -> YaRN x2.75 over the native 32,768 window.
    assert '"factor":2.75' in core["hf-overrides"]
    assert app_context_env(plan)["APPLIANCE_MODELS__CORE__N_CTX"] == "90112"


def test_vision_caps_image_size(services: dict[str, Any]) -> None:
    args = flag_values(services["vllm-vision"]["command"])
    assert args["mm-processor-kwargs"] == '{"max_pixels":1003520}'  # 1,280 tokens of 28 x 28 px
    assert args["limit-mm-per-prompt"] == '{"image":4}'


def test_app_containers_see_the_model_cache_read_only(services: dict[str, Any]) -> None:
    """The LoRA manager validates adapters against the served base's config.json, found
    in the same Hugging Face cache vLLM loaded it from."""
    for name in ("api", "worker-chat"):
        assert "models:/models:ro" in services[name]["volumes"], name
        assert services[name]["environment"]["HF_HOME"] == "/models/hf", name
