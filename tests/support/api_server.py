"""The real API app under uvicorn in a thread of the test process (real HTTP), for tests
that need an API with other settings beside the session stack (sharing its Redis and
workers), or an app whose dispatcher the test instruments."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

import httpx
import uvicorn
from fastapi import FastAPI

from configs.schema import Settings
from core_agent.api.app import create_app


@contextmanager
def serving(app: FastAPI, port: int, ready_s: float = 60) -> Iterator[str]:
    """Serve `app` on 127.0.0.1:`port` until the block ends; yields its URL once /health
    answers (fails if it never does, or if the server thread dies first)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_s
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the API at {url} did not answer /health within {ready_s:g}s")
        time.sleep(0.1)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def api_process(settings: Settings, ready_s: float = 60):
    """The appliance API with these settings (on settings.api_port); yields its URL."""
    return serving(create_app(settings), settings.api_port, ready_s)
