"""The vision request is bounded: every call to the vision-language server carries a
max_tokens (issue 12 item 6). No VL model runs here, so a stand-in HTTP server (named
fake) records what the real OpenAI client sends and answers in the OpenAI format."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from configs.schema import VisionConfig
from workers.backends.vision import OpenAICompatibleVision


def test_vision_request_sets_max_tokens() -> None:
    seen: list[dict] = []

    class FakeVisionServer(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "qwen2.5-vl-7b",
                               "choices": [{"index": 0, "finish_reason": "stop",
                                            "message": {"role": "assistant", "content": "a cat"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeVisionServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = VisionConfig(backend="openai", base_url=f"http://127.0.0.1:{server.server_port}/v1",
                              served_model="qwen2.5-vl-7b", max_tokens=321)
        assert OpenAICompatibleVision(config).describe(b"\x89PNG fake", "what is it?") == "a cat"
    finally:
        server.shutdown()
    assert seen[0]["max_tokens"] == 321
    assert VisionConfig().max_tokens == 1024  # the default bounds it too
