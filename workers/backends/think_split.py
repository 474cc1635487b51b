"""Split a streamed answer that writes its reasoning inline (`<think>...</think>`, as
Qwen3 does when no server-side reasoning parser ran, e.g. llama.cpp) into reasoning
and content, so reasoning never ends up in the answer text or in memory.

Only a think block at the very start of the answer counts (that is where Qwen3 puts
it); a tag later in the text is ordinary content. Tags split across stream pieces
are held back until they are complete.
"""

from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"


class ThinkSplitter:
    """Feed text pieces; get back (reasoning, content) for each."""

    def __init__(self) -> None:
        self._state = "start"  # start -> thinking -> after_think -> answer
        self._held = ""

    def feed(self, piece: str) -> tuple[str, str]:
        text = self._held + piece
        self._held = ""
        if self._state == "start":
            stripped = text.lstrip()
            if stripped.startswith(OPEN):
                self._state = "thinking"
                text = stripped[len(OPEN):]
            elif OPEN.startswith(stripped):
                self._held = text  # maybe the start of "<think>": wait for more
                return "", ""
            else:
                self._state = "answer"
                return "", text
        if self._state == "thinking":
            end = text.find(CLOSE)
            if end != -1:
                # Qwen3 puts blank lines between </think> and the answer: drop them.
                self._state = "after_think"
                return text[:end], self._answer_start(text[end + len(CLOSE):])
            keep = _partial_suffix(text, CLOSE)
            self._held = text[len(text) - keep:] if keep else ""
            return text[:len(text) - keep], ""
        if self._state == "after_think":
            return "", self._answer_start(text)
        return "", text

    def _answer_start(self, text: str) -> str:
        stripped = text.lstrip("\n")
        if stripped:
            self._state = "answer"
        return stripped

    def flush(self) -> tuple[str, str]:
        """What is still held back when the stream ends."""
        held, self._held = self._held, ""
        if self._state == "thinking":
            return held, ""
        return "", held


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper start of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0
