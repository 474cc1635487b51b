"""The session fixture `vllm_server`: one real vLLM CPU server shared by every test module
that uses it (the server itself is bench/harness/vllm_cpu.py, which benches use too)."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import Callable, Iterator

import pytest

from bench.harness.vllm_cpu import (SERVED_NAME, TOOL_CALL_ARGS, VLLM_PYTHON, Progress, VllmServer,  # noqa: F401
                                    free_port, lora_server_args, running_vllm, vllm_unavailable_reason)
from bench.harness.tiny_model import tiny_hf_model_dir

# --- pytest ---------------------------------------------------------------------------

_session_server: VllmServer | None = None


def _terminal(config: pytest.Config) -> Callable[[], object]:
    """A context in which prints reach the terminal despite output capture."""
    capture = config.pluginmanager.getplugin("capturemanager")
    return capture.global_and_fixture_disabled if capture else nullcontext


def _say(config: pytest.Config) -> Progress:
    def say(line: str) -> None:
        with _terminal(config)():
            print(f"[vllm] {line}", file=sys.stderr, flush=True)
    return say


@pytest.fixture(scope="session")
def vllm_server(request: pytest.FixtureRequest) -> Iterator[VllmServer]:
    """The session's one vLLM server (tiny model, LoRA on: --max-loras 2 --max-lora-rank 16).

    Modules that import this fixture share the same server: it is kept in a module
    global and stopped when the session ends.
    """
    global _session_server
    reason = vllm_unavailable_reason()
    if reason:
        pytest.skip(reason)
    if _session_server is None:
        say = _say(request.config)
        args, env = lora_server_args()
        server = VllmServer(model_dir=tiny_hf_model_dir(), extra_args=args + TOOL_CALL_ARGS, extra_env=env,
                            progress=say)
        server.start()
        _session_server = server
        request.session.config.add_cleanup(server.stop)
    elif _session_server._proc is None:
        _session_server.start()  # a test stopped it (restart test that failed half-way)
    yield _session_server
