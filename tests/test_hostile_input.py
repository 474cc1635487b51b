"""Hostile input against the running stack (issue 16): every attack gets a 4xx in the
`{"error": {...}}` shape that says what is wrong, memory stays bounded, and nothing of
a refused request is stored.

Each case was a 500 (or a 400 where 413 is right, or stored-then-broken) before the fix.
"""

from __future__ import annotations

import base64
import io
import struct
import threading
import time
import tracemalloc
import zipfile
import zlib

import docx  # python-docx, imported here so the memory measured below is the parser's alone
import httpx
import pytest
import redis

from rag.archive_check import MAX_UNCOMPRESSED_BYTES
from rag.parsers import ParseError, parse_file

# A turn cheap enough for a loaded 2-core machine: a couple of tokens, no planner.
CHEAP = {"max_tokens": 2, "mode": "direct"}


def _assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body  # never {"detail": ...}
    assert set(body["error"]) >= {"message", "type", "code"}, body
    assert body["error"]["message"], body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def _conversation_count(client: httpx.Client) -> int:
    return len(client.get("/conversations", params={"limit": 1000}).json())


# --- invalid Unicode ------------------------------------------------------------------

@pytest.mark.parametrize("path,raw", [
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "a\\ud800b"}], "max_tokens": 2}'),
    ("/v1/embeddings", '{"model": "minilm", "input": ["fine", "a\\udc00b"]}'),
])
def test_lone_surrogate_is_a_400_naming_the_field_and_stores_nothing(stack, path, raw):
    with stack.http() as client:
        before = _conversation_count(client)
        error = _assert_error(client.post(path, content=raw, headers={"Content-Type": "application/json"}),
                              400, "invalid_unicode")
        assert "surrogate" in error["message"]
        assert ("messages[0].content" if "chat" in path else "input[1]") in error["message"]
        assert _conversation_count(client) == before


def test_a_complete_surrogate_pair_and_an_escaped_backslash_are_fine(stack):
    """The guard refuses only broken text: an emoji as a JSON surrogate pair, and the
    literal text `\\ud800` (escaped backslash), are valid and reach the route."""
    raw = '{"model": "minilm", "input": ["smile \\ud83d\\ude00", "literal \\\\ud800"]}'
    with stack.http() as client:
        response = client.post("/v1/embeddings", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 2


# --- images ---------------------------------------------------------------------------

def _png_header_bomb(width: int, height: int) -> bytes:
    """A real 1-bit PNG of width x height, all zero: tens of KB on disk, width*height
    pixels (1.2 GB as RGB) once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_png_decompression_bomb_is_a_413_before_decoding(stack):
    png = _png_header_bomb(20000, 20000)
    assert len(png) < 100_000
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    with stack.http() as client:
        error = _assert_error(client.post("/v1/chat/completions", json={**CHEAP, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                         {"type": "image_url", "image_url": {"url": url}}]}]}),
            413, "image_too_large")
    assert "pixels" in error["message"] and "vision.max_pixels" in error["message"]


@pytest.mark.parametrize("part", [
    {"type": "image_url", "image_url": "data:x"},
    {"type": "image_url", "image_url": {"url": 42}},
    {"type": "text", "text": {"nested": "object"}},
])
def test_malformed_content_parts_are_a_400(stack, part):
    with stack.http() as client:
        error = _assert_error(client.post("/v1/chat/completions", json={
            **CHEAP, "messages": [{"role": "user", "content": [part]}]}), 400)
    assert part["type"] in error["message"]


# --- archives -------------------------------------------------------------------------

def _docx_zip_bomb(unpacked_mib: int) -> bytes:
    """A real .docx (python-docx's own package) whose word/document.xml is replaced by a
    valid one that inflates to `unpacked_mib` MiB: ~1 MB packed for 1 GiB (deflate of
    repeated bytes). Opened by python-docx as it was, it would be inflated and parsed."""
    skeleton = io.BytesIO()
    docx.Document().save(skeleton)
    out = io.BytesIO()
    with zipfile.ZipFile(skeleton) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for item in source.infolist():
            if item.filename != "word/document.xml":
                archive.writestr(item.filename, source.read(item.filename))
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            member.write(b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<w:document xmlns:w='
                         b'"http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>')
            block = b"A" * (1024 * 1024)
            for _ in range(unpacked_mib):
                member.write(block)
            member.write(b"</w:t></w:r></w:p></w:body></w:document>")
    return out.getvalue()


@pytest.fixture(scope="module")
def docx_bomb() -> bytes:
    return _docx_zip_bomb(1024)


def test_docx_zip_bomb_is_refused_by_the_parser_without_inflating(docx_bomb):
    """The check reads the zip's directory only: parsing a 1 GiB bomb stays within a few
    MB of Python memory (it used to inflate the rag worker past 2.8 GB)."""
    assert len(docx_bomb) < 2 * 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(ParseError, match=r"unpack to 102[45] MiB, more than 64 MiB"):
            parse_file(docx_bomb, "bomb.docx")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(docx_bomb) + 16 * 1024 * 1024, f"peak {peak} bytes while refusing the bomb"


def test_docx_zip_bomb_upload_is_a_413_and_nothing_is_ingested(stack, docx_bomb):
    with stack.http() as client:
        error = _assert_error(client.post("/documents", files=[
            ("files", ("notes/fine.md", b"# Fine\n\nA harmless note about kiwis.", "text/markdown")),
            ("files", ("bomb.docx", docx_bomb, "application/octet-stream"))]), 413, "archive_too_large")
        assert "bomb.docx" in error["message"] and "nothing was ingested" in error["message"]
        listed = client.get("/documents").json()
    assert not [d for d in listed if d["source"] in ("notes/fine.md", "bomb.docx")]


def test_a_docx_just_under_the_limit_still_parses():
    """The limit is not a blanket refusal: a real .docx well within it is read."""
    document = docx.Document()
    document.add_heading("Kiwi report", level=1)
    document.add_paragraph("Kiwis are flightless birds. " * 200)
    buffer = io.BytesIO()
    document.save(buffer)
    parsed = parse_file(buffer.getvalue(), "report.docx")
    assert parsed.title == "Kiwi report" and "flightless" in parsed.text
    assert MAX_UNCOMPRESSED_BYTES >= 32 * 1024 * 1024


# --- oversized bodies -----------------------------------------------------------------

def test_chunked_body_over_the_limit_is_a_413(stack):
    limit = stack.settings.max_request_bytes
    sent = 0

    def chunks():
        nonlocal sent
        piece = b" " * 65536
        while sent <= limit + len(piece) * 4:
            sent += len(piece)
            yield piece

    with stack.http() as client:
        response = client.post("/v1/chat/completions", content=chunks(),
                               headers={"Content-Type": "application/json"})
    assert "content-length" not in {k.lower() for k in response.request.headers}
    _assert_error(response, 413, "body_too_large")


def test_chunked_body_under_the_limit_still_works(stack):
    with stack.http() as client:
        response = client.post("/v1/embeddings", content=iter([b'{"model": "minilm", ', b'"input": "kiwi"}']),
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text


# --- one error format -----------------------------------------------------------------

def test_every_error_uses_the_envelope_and_the_schema_says_so(stack):
    with stack.http() as client:
        _assert_error(client.get("/no/such/route"), 404, "not_found")
        _assert_error(client.put("/v1/chat/completions"), 405, "method_not_allowed")
        _assert_error(client.post("/v1/chat/completions", content=b"{", headers={"Content-Type": "application/json"}),
                      400, "invalid_request")
        _assert_error(client.post("/v1/chat/completions", json={"messages": []}), 400, "invalid_request")
        _assert_error(httpx.get(f"{stack.url}/v1/models"), 401)
        schema = client.get("/openapi.json").json()
    assert "ErrorResponse" in schema["components"]["schemas"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, f"{method.upper()} {path} still lists 422"
            assert responses["400"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorResponse"}, f"{method.upper()} {path}"


# --- validation before storing --------------------------------------------------------

def test_a_refused_message_is_not_stored_and_the_thread_keeps_working(stack):
    cid = f"hostile-long-{int(time.time())}"
    with stack.http() as client:
        first = client.post("/v1/chat/completions", json={**CHEAP, "conversation_id": cid,
                                                          "messages": [{"role": "user", "content": "Say hi"}]})
        assert first.status_code == 200, first.text
        stored = client.get(f"/conversations/{cid}/messages").json()
        assert [m["role"] for m in stored] == ["user", "assistant"]

        huge = "word " * 20000  # 100k characters, ~20k tokens: beyond the 2048-token context
        error = _assert_error(client.post("/v1/chat/completions", json={
            **CHEAP, "conversation_id": cid, "messages": [{"role": "user", "content": huge}]}), 400)
        assert "context" in error["message"]
        assert client.get(f"/conversations/{cid}/messages").json() == stored

        later = client.post("/v1/chat/completions", json={**CHEAP, "conversation_id": cid,
                                                          "messages": [{"role": "user", "content": "Say bye"}]})
        assert later.status_code == 200, later.text
        roles = [m["role"] for m in client.get(f"/conversations/{cid}/messages").json()]
    assert roles == ["user", "assistant", "user", "assistant"]


def test_a_refused_first_message_leaves_no_conversation(stack):
    cid = f"hostile-new-{int(time.time())}"
    with stack.http() as client:
        _assert_error(client.post("/v1/chat/completions", json={
            **CHEAP, "conversation_id": cid, "messages": [{"role": "user", "content": "word " * 20000}]}), 400)
        _assert_error(client.get(f"/conversations/{cid}"), 404)


# --- /ready while the chat worker generates --------------------------------------------

# SmolLM2-135M runs this to the token limit at temperature 0 (checked), so the single
# chat worker stays busy for a long while.
LONG_ANSWER = "List the numbers from 1 to 500 separated by commas."


def test_ready_does_not_queue_behind_a_generation(stack):
    """With the single chat worker busy, /ready says ready (the worker is serving),
    answers without waiting for the generation, and leaves no probe task waiting in
    the chat queue behind it."""
    started, finished = threading.Event(), threading.Event()

    def long_generation() -> None:
        try:
            with stack.http() as client, client.stream("POST", "/v1/chat/completions", json={
                    "messages": [{"role": "user", "content": LONG_ANSWER}],
                    "max_tokens": 700, "temperature": 0, "mode": "direct", "memory": "off",
                    "stream": True}) as response:
                for i, _ in enumerate(response.iter_lines()):
                    if i == 4:
                        started.set()
        finally:
            started.set()
            finished.set()

    worker = threading.Thread(target=long_generation, daemon=True)
    worker.start()
    assert started.wait(180), "the generation never started streaming"
    generating = not finished.is_set()
    with stack.http() as client:
        response = client.get("/ready", timeout=120)
    still_generating = not finished.is_set()
    queued = redis.Redis.from_url(stack.settings.redis_url).llen("chat")
    worker.join(600)
    assert generating and still_generating, "the answer ended before /ready answered; the test proved nothing"
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ready"] is True and body["checks"]["models"]["ok"] is True, body
    assert "busy" in body["checks"]["models"]["detail"], body
    assert queued == 0, "a readiness probe was queued behind the generation"
