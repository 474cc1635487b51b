"""The per-event hot path (issue 17): the worker's token events and the API's SSE piece
chunks are written without pydantic per event, yet must stay exactly what the pydantic
contracts produce; the coalescer sends from its own thread without reordering, holding
the first piece, or losing a failure."""

from __future__ import annotations

import json
import threading
import time

import pytest

from configs.contracts.tasks import StreamEvent
from core_agent.api.openai_protocol import ChatCompletionChunk, ChunkChoice, DeltaMessage
from core_agent.api.sse_chunks import PieceChunks
from workers.events import piece_event_json
from workers.token_coalescer import TokenCoalescer

TEXTS = ["plain", "", 'quote " and \\ backslash', "line\nbreak\ttab", "ünïcødé ✓ 漢字 🙂", "\x00\x1f ctl"]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize(("kind", "attempt", "pieces"), [("token", 1, 1), ("reasoning", 3, 7)])
def test_piece_event_is_what_the_stream_event_contract_reads(kind: str, attempt: int, pieces: int,
                                                              text: str) -> None:
    data = piece_event_json(kind, attempt, text, pieces)
    expected = StreamEvent(type=kind, attempt=attempt, text=text, pieces=pieces)
    assert StreamEvent.model_validate_json(data) == expected
    assert json.loads(data) == json.loads(expected.model_dump_json(exclude_defaults=True)) | {"text": text}


@pytest.mark.parametrize("text", TEXTS)
def test_sse_piece_chunk_equals_the_pydantic_chunk(text: str) -> None:
    rendered = PieceChunks("chatcmpl-abc", "core:sport")
    for field, line in (("content", rendered.content(text)), ("reasoning_content", rendered.reasoning(text))):
        assert line.startswith("data: ") and line.endswith("\n\n")
        got = json.loads(line[6:])
        model = ChatCompletionChunk(id="chatcmpl-abc", model="core:sport", created=got["created"],
                                    choices=[ChunkChoice(delta=DeltaMessage(**{field: text}))])
        assert got == json.loads(model.model_dump_json(exclude_none=True))


class Recorder:
    """A send that records (kind, text, pieces) and the thread that sent it."""

    def __init__(self, delay_s: float = 0.0, fail_on: str | None = None) -> None:
        self.sent: list[tuple[str, str, int]] = []
        self.threads: set[str] = set()
        self.delay_s, self.fail_on = delay_s, fail_on

    def __call__(self, kind: str, text: str, pieces: int) -> None:
        if self.fail_on is not None and self.fail_on in text:
            raise ConnectionError("redis went away")
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        self.sent.append((kind, text, pieces))

    def wait_for(self, count: int) -> list[tuple[str, str, int]]:
        deadline = time.monotonic() + 10
        while len(self.sent) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.sent


def test_a_slow_send_never_blocks_the_generating_thread() -> None:
    send = Recorder(delay_s=0.2)  # a Redis round trip on a very busy machine
    pieces = TokenCoalescer(send, interval_s=0.01)
    pieces.add("token", "t0 ")
    # The first piece is sent from the calling thread: no thread wake-up before it.
    assert send.sent == [("token", "t0 ", 1)] and send.threads == {threading.current_thread().name}
    pieces.add("token", "t1 ")                 # opens a window; the sender sends it when it closes
    deadline = time.monotonic() + 10
    while "token-sender" not in send.threads and time.monotonic() < deadline:
        time.sleep(0.001)                      # that slow send is under way...
    assert "token-sender" in send.threads
    started = time.monotonic()
    for i in range(2, 20):
        pieces.add("token", f"t{i} ")
    assert time.monotonic() - started < 0.1    # ...and no add() waited for it
    pieces.flush()
    assert "".join(text for _, text, _ in send.sent) == "".join(f"t{i} " for i in range(20))
    assert sum(n for _, _, n in send.sent) == 20


def test_pieces_in_one_window_share_an_event_measured_from_the_first_unsent() -> None:
    send = Recorder()
    pieces = TokenCoalescer(send, interval_s=0.2)
    pieces.add("token", "a")                      # first piece: at once
    assert send.wait_for(1) == [("token", "a", 1)]
    pieces.add("token", "b")                      # opens a 0.2 s window
    time.sleep(0.05)
    pieces.add("token", "c")                      # joins it
    assert send.wait_for(2) == [("token", "a", 1), ("token", "bc", 2)]


def test_flush_sends_after_the_send_in_flight_and_keeps_kinds_apart() -> None:
    send = Recorder(delay_s=0.05)
    pieces = TokenCoalescer(send, interval_s=10.0)  # nothing leaves by timer here
    pieces.add("reasoning", "think ")
    pieces.add("reasoning", "more ")
    pieces.add("token", "a")
    pieces.add("token", "b")
    pieces.add("token", "c")
    pieces.flush()                                 # what 'done' does before its own event
    assert send.sent == [("reasoning", "think ", 1), ("reasoning", "more ", 1),
                         ("token", "a", 1), ("token", "bc", 2)]


def test_a_failed_send_reaches_the_generating_thread() -> None:
    send = Recorder(fail_on="boom")
    pieces = TokenCoalescer(send, interval_s=0.01)
    pieces.add("token", "fine ")                  # sent from this thread
    pieces.add("token", "boom")                   # sent (and failing) in the sender thread
    deadline = time.monotonic() + 10
    with pytest.raises(ConnectionError):
        while time.monotonic() < deadline:
            pieces.add("token", "x")
            time.sleep(0.01)
