"""Split parsed documents into overlapping token windows that keep their context.

A "token" here is a word or a punctuation mark (regex), not a model's word piece:
it is the same for every embedding backend, cheap, and close enough to budget a
prompt (a word is ~1.3 word pieces in English). Chunks are cut on token
boundaries, preferably at the end of a sentence, and carry the Markdown heading
path of the section they come from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rag.parsers import Section

TOKEN_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)
# Tokens never hold whitespace, so a line break is not a token: a token ends a
# sentence when it is one of these marks or the last one before a line break (a
# list item, a heading or a paragraph without a final full stop).
SENTENCE_END = frozenset(".!?…")


def count_tokens(text: str) -> int:
    return sum(1 for _ in TOKEN_RE.finditer(text))


def truncate_tokens(text: str, limit: int) -> str:
    """The longest prefix of `text` with at most `limit` tokens."""
    if limit <= 0:
        return ""
    for i, match in enumerate(TOKEN_RE.finditer(text)):
        if i == limit - 1:
            return text[:match.end()]
    return text


@dataclass
class Chunk:
    index: int
    text: str
    heading_path: str
    tokens: int

    def embedding_text(self, title: str) -> str:
        """What is embedded and lexically indexed: the chunk plus where it sits."""
        context = " > ".join(p for p in (title, self.heading_path) if p)
        return f"{context}\n{self.text}" if context else self.text


def _ends_sentence(text: str, spans: list[tuple[int, int, str]], i: int) -> bool:
    if spans[i][2] in SENTENCE_END:
        return True
    gap_end = spans[i + 1][0] if i + 1 < len(spans) else len(text)
    return "\n" in text[spans[i][1]:gap_end]


def _windows(text: str, size: int, overlap: int) -> list[str]:
    spans = [(m.start(), m.end(), m.group()) for m in TOKEN_RE.finditer(text)]
    if not spans:
        return []
    if len(spans) <= size:
        return [text[spans[0][0]:spans[-1][1]].strip()]
    out: list[str] = []
    start = 0
    while start < len(spans):
        end = min(start + size, len(spans))
        if end < len(spans):
            # Prefer to end at a sentence end within the last quarter of the window.
            for cut in range(end, start + (3 * size) // 4, -1):
                if _ends_sentence(text, spans, cut - 1):
                    end = cut
                    break
        out.append(text[spans[start][0]:spans[end - 1][1]].strip())
        if end >= len(spans):
            break
        start = max(end - overlap, start + 1)
    return out


def chunk_sections(sections: list[Section], size: int, overlap: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    for section in sections:
        for piece in _windows(section.text, size, overlap):
            if piece:
                chunks.append(Chunk(index=len(chunks), text=piece, heading_path=section.heading_path,
                                    tokens=count_tokens(piece)))
    return chunks
