"""The SSE chunk for one piece of streamed text, rendered from a per-stream template.

Every answer piece of a streamed chat completion is a `chat.completion.chunk` that
differs from the others only in its text. Building ChatCompletionChunk -> ChunkChoice
-> DeltaMessage and dumping them per piece was the API's largest per-event cost after
the Redis read; here the constant part is rendered once per stream (through the same
pydantic models, so the fields stay what openai_protocol.py says) and each piece only
pays one json.dumps of its text. tests/test_stream_events.py checks the output equals
the pydantic chunk's JSON.
"""

from __future__ import annotations

import json

from core_agent.api.openai_protocol import ChatCompletionChunk, ChunkChoice, DeltaMessage

_MARK = "\x00piece\x00"  # stands in for the text while rendering the template


class PieceChunks:
    """SSE `data:` lines for the answer (content) and reasoning (reasoning_content) pieces
    of one streamed completion."""

    def __init__(self, completion_id: str, model: str) -> None:
        self._content = self._template(completion_id, model, "content")
        self._reasoning = self._template(completion_id, model, "reasoning_content")

    @staticmethod
    def _template(completion_id: str, model: str, field: str) -> tuple[str, str]:
        chunk = ChatCompletionChunk(id=completion_id, model=model,
                                    choices=[ChunkChoice(delta=DeltaMessage(**{field: _MARK}))])
        head, tail = f"data: {chunk.model_dump_json(exclude_none=True)}\n\n".split(json.dumps(_MARK))
        return head, tail

    def content(self, text: str) -> str:
        head, tail = self._content
        return head + json.dumps(text, ensure_ascii=False) + tail

    def reasoning(self, text: str) -> str:
        head, tail = self._reasoning
        return head + json.dumps(text, ensure_ascii=False) + tail
