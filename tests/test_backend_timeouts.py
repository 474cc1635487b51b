"""A model server that does not answer in time is a retryable timeout, not "unreachable".

In the openai package APITimeoutError subclasses APIConnectionError, so a backend that
catches the connection error first turns every timeout into a non-retried 503. These
tests put a real server on loopback that accepts the connection, reads the request
and never answers, and call the real backends against it.
"""

from __future__ import annotations

import socket
import threading
from typing import Iterator

import pytest

from configs.contracts.errors import ModelUnavailable, TransientBackendError
from configs.contracts.tasks import ChatMessage, GenerationParams
from configs.schema import ChatModelConfig, VisionConfig
from workers.backends.openai_chat import OpenAICompatibleChat
from workers.backends.vision import OpenAICompatibleVision

CLIENT_TIMEOUT_S = 0.5


class SilentServer:
    """Accepts HTTP connections on 127.0.0.1 and holds them open without answering."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.recv(65536)           # read the request ...
            self._held.append(conn)    # ... and never answer it

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self._held:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens here once the socket is closed


def chat_backend(port: int) -> OpenAICompatibleChat:
    config = ChatModelConfig(backend="openai", base_url=f"http://127.0.0.1:{port}/v1",
                             request_timeout_s=CLIENT_TIMEOUT_S)
    return OpenAICompatibleChat("slowpoke", config)


def test_a_chat_server_that_does_not_answer_in_time_is_a_retryable_timeout(silent_server: SilentServer) -> None:
    backend = chat_backend(silent_server.port)
    with pytest.raises(TransientBackendError) as caught:
        list(backend.stream([ChatMessage(role="user", content="hi")], GenerationParams(max_tokens=4)))
    assert silent_server.accepted >= 1, "the request reached the server"
    assert "timed out" in str(caught.value)
    assert "models.slowpoke.request_timeout_s" in str(caught.value)
    assert caught.value.info().status == 503 and caught.value.info().code == "backend_transient"


def test_a_chat_server_nobody_listens_on_is_unreachable_not_a_timeout() -> None:
    backend = chat_backend(closed_port())
    with pytest.raises(ModelUnavailable) as caught:
        list(backend.stream([ChatMessage(role="user", content="hi")], GenerationParams(max_tokens=4)))
    assert not isinstance(caught.value, TransientBackendError)
    assert "unreachable" in str(caught.value)


def test_a_vision_server_that_does_not_answer_in_time_is_a_retryable_timeout(silent_server: SilentServer) -> None:
    backend = OpenAICompatibleVision(VisionConfig(backend="openai", base_url=f"http://127.0.0.1:{silent_server.port}/v1",
                                                  request_timeout_s=CLIENT_TIMEOUT_S))
    with pytest.raises(TransientBackendError) as caught:
        backend.describe(b"\x89PNG not really", "read it")
    assert silent_server.accepted >= 1
    assert "timed out" in str(caught.value) and "vision.request_timeout_s" in str(caught.value)
