"""One isolated appliance stack (redis-server, Celery workers, API, UI) in a temporary
data directory, started through the same launcher `appliance up` uses.

Shared by the tests (tests/conftest.py's session fixture `stack`) and the bench/
scripts; no pytest here, so benches run without the test extras.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import openai

from configs.loader import get_settings, load_settings
from configs.schema import Settings
from core_agent.ops import launcher

OWNER_TOKEN = "test-owner-token-0123456789"
# A model whose GGUF file does not exist: requests for it must fail clearly (503).
MISSING_MODEL = "missing"
MISSING_MODEL_PATH = "/nonexistent/models/missing.gguf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack_env(data_dir: Path) -> dict[str, str]:
    """APPLIANCE_* overrides for one isolated stack (ports, data dir, token)."""
    return {
        "APPLIANCE_DATA_DIR": str(data_dir),
        "APPLIANCE_API_PORT": str(free_port()),
        "APPLIANCE_UI_PORT": str(free_port()),
        "APPLIANCE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "APPLIANCE_API_KEY": OWNER_TOKEN,
        f"APPLIANCE_MODELS__{MISSING_MODEL.upper()}__PATH": MISSING_MODEL_PATH,
        # Tests run with less patience than production for a missing worker.
        "APPLIANCE_CELERY__PICKUP_TIMEOUT_S": "30",
        # The test stack lets the owner run code (off by default: see test_sandbox.py).
        "APPLIANCE_SANDBOX__ENABLED": "true",
    }


@dataclass
class Stack:
    settings: Settings
    token: str

    @property
    def url(self) -> str:
        return self.settings.api_url

    def http(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"},
                            timeout=kwargs.pop("timeout", 180), **kwargs)

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.token, timeout=180, max_retries=0)


@contextmanager
def running_stack(overrides: dict[str, str], progress=lambda line: None,
                  only: set[str] | None = None) -> Iterator[Stack]:
    """Start a stack with these APPLIANCE_* overrides (in this process's environment too,
    so settings loaded here match the children's), and stop it and restore afterwards.
    `only`: start just these services (launcher names, e.g. {"redis", "worker-chat", "api"})."""
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    get_settings.cache_clear()
    settings = load_settings()
    try:
        token = launcher.up(settings, progress=progress, only=only)
        yield Stack(settings=settings, token=token)
    finally:
        launcher.down(settings, progress=lambda line: None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
