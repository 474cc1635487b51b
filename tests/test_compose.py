"""compose.yaml: valid Compose, complete, and sized by the VRAM plan.

Docker cannot run here, so the file is validated (the Compose Specification through
pip `compose-spec`, Debian's `docker-compose config` when installed, and vLLM 0.32's
own argument parser for the model servers) and checked for what the owner relies on.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_spec import PyCompose

from configs.loader import load_settings
from configs.schema import QUEUE_NAMES
from core_agent.ops.vram_plan import (
    LORA_TARGET_MODULES,
    env_values,
    load_stack,
    plan_stack,
    read_env_block,
    vllm_args,
)

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
# Secrets .env.example leaves empty on purpose; a real .env must set them.
TEST_SECRETS = {"APPLIANCE_API_KEY": "test-owner-token", "QDRANT_API_KEY": "test-qdrant-key",
                "FLOWER_PASSWORD": "test-flower-password", "REDIS_PASSWORD": "test-redis-password"}
VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


# --- helpers: the same interpolation rules docker compose applies -----------------

def parse_env_file(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip().strip("'")
    return out


def interpolate(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        current = env.get(name)
        missing = current is None or (current == "" and op is not None and op.startswith(":"))
        if op and op.endswith("?") and missing:
            raise KeyError(f"{name}: {arg}")
        if op and op.endswith("-") and missing:
            return arg
        return current or ""

    return VAR.sub(one, value)


def used_variables(text: str) -> set[str]:
    return {m.group(1) or m.group(4) for m in VAR.finditer(text) if m.group(0) != "$$"}


def example_env() -> dict[str, str]:
    env = parse_env_file(ENV_EXAMPLE.read_text())
    env.update(TEST_SECRETS)
    return env


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def resolved(raw: dict[str, Any]) -> dict[str, Any]:
    """compose.yaml as docker compose sees it with a .env copied from .env.example."""
    data = interpolate(raw, example_env())
    return {k: v for k, v in data.items() if not k.startswith("x-")}


@pytest.fixture(scope="module")
def plan():
    return plan_stack(load_stack())


def vllm_services(resolved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in resolved["services"].items() if name.startswith("vllm-")}


def flag_values(command: list[str]) -> dict[str, Any]:
    """--name=value / --flag / --name v1 v2 ... -> {name: value | True | [values]}."""
    out: dict[str, Any] = {}
    key = None
    for token in command:
        if token.startswith("--"):
            name, eq, value = token[2:].partition("=")
            out[name] = value if eq else True
            key = None if eq else name
        elif key is not None:
            out[key] = [*out[key], token] if isinstance(out[key], list) else [token]
    return out


# --- validity ----------------------------------------------------------------------

def test_compose_file_follows_the_compose_specification(resolved: dict[str, Any]) -> None:
    compose = PyCompose.from_json(json.dumps(resolved))
    assert {"redis", "qdrant", "vllm-core", "vllm-code", "vllm-vision", "vllm-embed", "api", "ui",
            "flower"} <= set(compose.service_names())


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="Debian's docker-compose is not installed (apt-get install docker-compose)")
def test_debian_docker_compose_config_accepts_it(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}='{v}'\n" for k, v in example_env().items()))
    result = subprocess.run(["docker-compose", "--env-file", str(env_file), "-f", str(COMPOSE_FILE),
                             "config", "-q"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="Debian's docker-compose is not installed (apt-get install docker-compose)")
def test_a_missing_plan_says_how_to_make_it(tmp_path: Path) -> None:
    env = {k: v for k, v in example_env().items() if not k.startswith("VLLM_")}
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}='{v}'\n" for k, v in env.items()))
    result = subprocess.run(["docker-compose", "--env-file", str(env_file), "-f", str(COMPOSE_FILE),
                             "config", "-q"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "run ./scripts/vram-plan.sh --write-env" in result.stderr


# --- completeness --------------------------------------------------------------------

def test_every_service_has_a_healthcheck(resolved: dict[str, Any]) -> None:
    for name, svc in resolved["services"].items():
        check = svc.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_images_are_pinned_and_vllm_matches_the_tested_cpu_build(resolved: dict[str, Any]) -> None:
    for name, svc in resolved["services"].items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d", tag), f"{name}: image {image} not pinned"
    tested = re.search(r'VLLM_VERSION="([^"]+)"', (ROOT / "scripts" / "setup-vllm-cpu.sh").read_text()).group(1)
    assert {svc["image"] for svc in vllm_services(resolved).values()} == {f"vllm/vllm-openai:v{tested}"}


def test_every_variable_used_is_listed_in_env_example() -> None:
    listed = set(parse_env_file(ENV_EXAMPLE.read_text()))
    missing = used_variables(COMPOSE_FILE.read_text()) - listed
    assert not missing, f"add to .env.example: {sorted(missing)}"


def test_env_example_carries_the_current_plan(plan) -> None:
    assert read_env_block(ENV_EXAMPLE.read_text()) == env_values(plan), \
        "run: appliance vram-plan --write-env --env-file .env.example"


def test_gpu_services_reserve_the_gpu_and_others_do_not(resolved: dict[str, Any], plan) -> None:
    for name, svc in resolved["services"].items():
        devices = svc.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        if name.startswith("vllm-"):
            assert devices and devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"], name
            assert devices[0]["device_ids"] == [str(plan.service(name).card)], name
            assert svc["profiles"] == ["gpu"], name
        elif name == "trainer":  # LoRA training (profile train), run after scripts/train-pause.sh
            assert devices and svc["profiles"] == ["train"], name
        else:
            assert not devices, f"{name} reserves a GPU but runs no model on it"


def test_dependencies_wait_for_health_within_one_profile(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert cond["condition"] == "service_healthy", f"{name} -> {dep}"
            dep_profiles = set(services[dep].get("profiles", []))
            # A dependency in another profile would be missing when only this one is up.
            assert not dep_profiles or dep_profiles == set(svc.get("profiles", [])), f"{name} -> {dep}"


@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_one_celery_worker_per_queue_in_each_profile(resolved: dict[str, Any], profile: str) -> None:
    queues = []
    for svc in resolved["services"].values():
        cmd = svc.get("command") or []
        if cmd[:4] == ["celery", "-A", "workers.celery_app", "worker"] and svc.get("profiles") == [profile]:
            queues.append(cmd[cmd.index("-Q") + 1])
    # Every queue the core sends to has its worker, the background chat lane included
    # (without it, webhook and chore requests would wait in Redis forever).
    lanes = {load_settings().traffic.background_queue} - {"chat"}
    assert sorted(queues) == sorted([*QUEUE_NAMES, *lanes])


def test_named_volumes_and_persistence(resolved: dict[str, Any]) -> None:
    assert {"models", "adapters", "appliance-data", "redis-data", "qdrant-data"} <= set(resolved["volumes"])
    services = resolved["services"]
    assert "--appendonly" in services["redis"]["command"]
    assert services["qdrant"]["environment"]["QDRANT__SERVICE__API_KEY"] == TEST_SECRETS["QDRANT_API_KEY"]
    # The adapter path the LoRA manager sends must exist in vllm-core at the same place.
    assert "adapters:/data/adapters:ro" in services["vllm-core"]["volumes"]
    assert "adapters:/data/adapters" in services["api"]["volumes"]


# --- sized by the plan ----------------------------------------------------------------

def test_vllm_arguments_are_the_plans(resolved: dict[str, Any], plan) -> None:
    """Every model server's command line, after .env interpolation, is exactly what the
    planner's vllm_args() writes for it: one source for compose, the tests and the twin."""
    for name, svc in vllm_services(resolved).items():
        assert svc["command"] == vllm_args(plan.service(name)), name
        assert svc["entrypoint"] == ["vllm", "serve"], name
    core = flag_values(resolved["services"]["vllm-core"]["command"])
    lora = plan.service("vllm-core").knobs.lora
    assert core["enable-lora"] is True and core["enable-prefix-caching"] is True
    assert core["reasoning-parser"] == "qwen3"
    assert core["enable-auto-tool-choice"] is True and core["tool-call-parser"] == "hermes"
    assert (int(core["max-loras"]), int(core["max-lora-rank"]), int(core["max-cpu-loras"])) == \
        (lora.max_loras, lora.max_lora_rank, lora.max_cpu_loras)
    assert tuple(core["lora-target-modules"]) == LORA_TARGET_MODULES
    assert resolved["services"]["vllm-core"]["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert sum(s.gpu_memory_utilization for s in plan.services) <= 0.95


def test_chat_worker_concurrency_follows_the_core_sequences(resolved: dict[str, Any], plan) -> None:
    cmd = resolved["services"]["worker-chat"]["command"]
    assert int(cmd[cmd.index("-c") + 1]) == plan.service("vllm-core").knobs.max_num_seqs


def test_gpu_chat_lanes_run_a_threads_pool(resolved: dict[str, Any]) -> None:
    """They only wait on vLLM over HTTP (compose.yaml says why); tests/test_production_twin.py
    runs its chat lane the same way against the vLLM twin."""
    for name in ("worker-chat", "worker-chat-bg"):
        cmd = resolved["services"][name]["command"]
        assert cmd[cmd.index("-P") + 1] == "threads", name


def test_gpu_settings_point_at_the_planned_servers(plan) -> None:
    # Only the shipped files and the profile: the session's test stack sets APPLIANCE_*
    # variables of its own (e.g. an extra model) that are not part of the gpu profile.
    settings = load_settings(environ={"APPLIANCE_PROFILE": "gpu"})
    served = {f"http://{s.service}:8000/v1": s for s in plan.services}
    for name, model in settings.models.items():
        assert model.backend == "openai" and model.base_url in served, name
        server = served[model.base_url]
        assert model.served_model == server.knobs.served_name, name
        assert model.n_ctx <= server.knobs.max_model_len, f"{name}: n_ctx above the server's context"
    embed = settings.embeddings.models[settings.embeddings.default_model]
    assert served[embed.base_url].knobs.served_name == embed.served_model
    assert settings.vision.backend == "openai"
    assert served[settings.vision.base_url].knobs.served_name == settings.vision.served_model
    assert settings.routes["code"].model == "code"
    # The LoRA manager never asks vllm-core for more than it was started with.
    lora = plan.service("vllm-core").knobs.lora
    assert settings.adapters.max_rank <= lora.max_lora_rank
    assert settings.adapters.max_loras <= lora.max_cpu_loras


def test_cpu_profile_workers_run_llama_cpp(resolved: dict[str, Any]) -> None:
    cpu_workers = [svc for svc in resolved["services"].values() if svc.get("profiles") == ["cpu"]]
    assert cpu_workers and all(svc["environment"]["APPLIANCE_PROFILE"] == "local" for svc in cpu_workers)
    assert load_settings(environ={"APPLIANCE_PROFILE": "local"}).models["core"].backend == "llamacpp"


def test_app_image_is_cuda_free() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert not re.search(r"^FROM\s+\S*(cuda|nvidia)", dockerfile, re.M | re.I)
    assert "download.pytorch.org/whl/cpu" in dockerfile and '"torch==2.13.0"' in dockerfile
    # Every package pyproject.toml installs is copied into the image.
    include = re.search(r"^include = \[(.*)\]", (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    for package in re.findall(r'"(\w+)\*"', include):
        assert f"COPY {package} ./{package}" in dockerfile, f"Dockerfile does not copy {package}/"


@pytest.mark.skipif(not VLLM_PYTHON.exists(), reason="no .venv-vllm: run scripts/setup-vllm-cpu.sh")
def test_vllm_accepts_every_server_command(resolved: dict[str, Any]) -> None:
    """vLLM 0.32's own argument parser reads each model server's command line."""
    commands = {name: svc["command"] for name, svc in vllm_services(resolved).items()}
    script = (
        "import json, sys\n"
        "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
        "from vllm.entrypoints.launchers.cli_args import make_arg_parser\n"
        "out = {}\n"
        "for name, argv in json.load(sys.stdin).items():\n"
        "    ns = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)\n"
        "    out[name] = {'model': ns.model, 'util': ns.gpu_memory_utilization, 'hf': ns.hf_overrides,\n"
        "                 'lora': bool(ns.enable_lora), 'targets': ns.lora_target_modules,\n"
        "                 'kv_bytes': ns.kv_cache_memory_bytes, 'revision': ns.revision,\n"
        "                 'reasoning': ns.reasoning_parser, 'tools': ns.tool_call_parser,\n"
        "                 'auto_tools': ns.enable_auto_tool_choice, 'mm': ns.mm_processor_kwargs}\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run([str(VLLM_PYTHON), "-c", script], input=json.dumps(commands),
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    parsed = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(parsed) == set(commands)
    assert parsed["vllm-core"]["lora"] and parsed["vllm-core"]["targets"] == list(LORA_TARGET_MODULES)
    assert parsed["vllm-core"]["hf"] == {"num_experts_per_tok": 8} or "num_experts_per_tok" in parsed["vllm-core"]["hf"]
    assert (parsed["vllm-core"]["reasoning"], parsed["vllm-core"]["tools"], parsed["vllm-core"]["auto_tools"]) == \
        ("qwen3", "hermes", True)
    for name, seen in parsed.items():
        assert seen["kv_bytes"] and seen["revision"], name
    assert parsed["vllm-vision"]["mm"] == {"max_pixels": 1003520}


# --- isolation: Redis password, the code worker's container (docs/security.md) ----------

CODE_WORKERS = ("worker-code", "worker-code-cpu")


def test_redis_requires_a_password_and_every_client_url_carries_it(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    command = services["redis"]["command"]
    assert command[command.index("--requirepass") + 1] == TEST_SECRETS["REDIS_PASSWORD"]
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == TEST_SECRETS["REDIS_PASSWORD"]  # healthcheck
    urls = {name: env["APPLIANCE_REDIS_URL"] for name, svc in services.items()
            if isinstance(env := svc.get("environment"), dict) and "APPLIANCE_REDIS_URL" in env}
    assert {"api", "flower", "worker-chat", *CODE_WORKERS} <= set(urls)
    for name, url in urls.items():
        assert url == f"redis://:{TEST_SECRETS['REDIS_PASSWORD']}@redis:6379/0", f"{name}: {url}"


def test_a_missing_redis_password_stops_compose(raw: dict[str, Any]) -> None:
    env = {k: v for k, v in example_env().items() if k != "REDIS_PASSWORD"}
    with pytest.raises(KeyError, match="REDIS_PASSWORD"):
        interpolate(raw, env)


@pytest.mark.parametrize("name", CODE_WORKERS)
def test_the_code_worker_container_holds_no_data_and_no_secrets(resolved: dict[str, Any], name: str) -> None:
    svc = resolved["services"][name]
    assert not svc.get("volumes"), f"{name} mounts {svc.get('volumes')}"
    env = svc["environment"]
    for secret in ("APPLIANCE_API_KEY", "APPLIANCE_MEMORY__QDRANT_API_KEY", "HF_TOKEN", "FLOWER_PASSWORD"):
        assert secret not in env, f"{name} gets {secret}"
    secrets = {v for k, v in TEST_SECRETS.items() if k != "REDIS_PASSWORD"}
    assert not secrets & {str(v) for v in env.values()}
    assert not env["APPLIANCE_DATA_DIR"].startswith("/data")
    assert svc["networks"] == ["code"] and svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in svc["security_opt"]
    assert env["WORKER_QUEUE"] == "code"


def test_the_code_network_is_internal_and_reaches_only_redis_and_the_code_model(resolved: dict[str, Any]) -> None:
    assert resolved["networks"]["code"].get("internal") is True
    members = {name for name, svc in resolved["services"].items() if "code" in (svc.get("networks") or [])}
    assert members == {"redis", "vllm-code", *CODE_WORKERS}


def test_the_app_image_has_bubblewrap() -> None:
    assert re.search(r"apt-get install[^\n]*bubblewrap", (ROOT / "Dockerfile").read_text())
