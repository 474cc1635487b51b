"""Split parsed documents into overlapping token windows that keep their context.

Chunks are sized in the embedding model's own tokens (`model_token_spans`): the
model reads at most a fixed number of word pieces (all-MiniLM-L6-v2: 256) and
silently drops the rest, and Cyrillic text costs far more word pieces than words
(an English-only WordPiece vocabulary splits Russian words into many pieces), so a
word count would let Russian chunks overflow. Chunks are cut on token boundaries,
preferably at the end of a sentence, and carry the Markdown heading path of the
section they come from.

`count_tokens` / `truncate_tokens` (a word or punctuation mark = one token) stay the
cheap, model-free measure the core uses to budget prompts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from rag.parsers import Section

TOKEN_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)
# Tokens never hold whitespace, so a line break is not a token: a token ends a
# sentence when it is one of these marks or the last one before a line break (a
# list item, a heading or a paragraph without a final full stop).
SENTENCE_END = frozenset(".!?…")

# Character spans (start, end) of the tokens a model reads in `text`.
TokenSpans = Callable[[str], list[tuple[int, int]]]


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


def word_spans(text: str) -> list[tuple[int, int]]:
    """Words and punctuation marks: the measure when the model's tokenizer is not local."""
    return [m.span() for m in TOKEN_RE.finditer(text)]


def hf_token_spans(tokenizer: Any) -> TokenSpans:
    """Spans of a Hugging Face fast tokenizer's tokens (no [CLS]/[SEP])."""

    def spans(text: str) -> list[tuple[int, int]]:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False,
                            verbose=False)
        return [(a, b) for a, b in encoded["offset_mapping"] if b > a]

    return spans


def model_token_spans(embedder: Any) -> TokenSpans:
    """The embedder's own tokenizer when it runs in this process (sentence-transformers
    exposes it as `.model.tokenizer`); a remote model (OpenAI-compatible server) has none
    here, so chunks fall back to words (set `memory.chunk_tokens` with margin for it)."""
    model = getattr(embedder, "model", None)
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None and getattr(tokenizer, "is_fast", False):
        return hf_token_spans(tokenizer)
    return word_spans


@dataclass
class Chunk:
    index: int
    text: str
    heading_path: str
    tokens: int

    def embedding_text(self, title: str) -> str:
        """What is embedded and lexically indexed: the chunk plus where it sits."""
        context = heading_context(title, self.heading_path)
        return f"{context}\n{self.text}" if context else self.text


def heading_context(title: str, heading_path: str) -> str:
    """"Title > H1 > H2", without repeating a title that is also the first heading."""
    if title and (heading_path == title or heading_path.startswith(title + " > ")):
        return heading_path
    return " > ".join(p for p in (title, heading_path) if p)


def _ends_sentence(text: str, spans: list[tuple[int, int]], i: int) -> bool:
    if text[spans[i][1] - 1] in SENTENCE_END:
        return True
    gap_end = spans[i + 1][0] if i + 1 < len(spans) else len(text)
    return "\n" in text[spans[i][1]:gap_end]


def _windows(text: str, size: int, overlap: int, spans_of: TokenSpans) -> list[tuple[str, int]]:
    """(piece, tokens) windows of at most `size` tokens overlapping by `overlap`."""
    spans = spans_of(text)
    if not spans:
        return []
    if len(spans) <= size:
        return [(text[spans[0][0]:spans[-1][1]].strip(), len(spans))]
    out: list[tuple[str, int]] = []
    start = 0
    while start < len(spans):
        end = min(start + size, len(spans))
        if end < len(spans):
            # Prefer to end at a sentence end within the last quarter of the window.
            for cut in range(end, start + (3 * size) // 4, -1):
                if _ends_sentence(text, spans, cut - 1):
                    end = cut
                    break
        out.append((text[spans[start][0]:spans[end - 1][1]].strip(), end - start))
        if end >= len(spans):
            break
        start = max(end - overlap, start + 1)
    return out


MIN_CHUNK_TOKENS = 16
SPECIAL_TOKENS = 2   # [CLS] and [SEP] count against the model's input limit


def chunk_sections(sections: list[Section], size: int, overlap: int, spans_of: TokenSpans = word_spans,
                   model_limit: int | None = None, title: str = "") -> list[Chunk]:
    """Chunks of at most `size` tokens. With `model_limit` (the tokens the model reads),
    a section's chunks shrink so that the heading context embedded with each chunk
    still fits: a deep Russian heading path alone can cost 70 word pieces."""
    chunks: list[Chunk] = []
    for section in sections:
        section_size, section_overlap = size, overlap
        if model_limit:
            context = heading_context(title, section.heading_path)
            room = model_limit - SPECIAL_TOKENS - (len(spans_of(context)) + 1 if context else 0)
            section_size = max(min(size, room), MIN_CHUNK_TOKENS)
            section_overlap = min(overlap, section_size // 4)
        for piece, tokens in _windows(section.text, section_size, section_overlap, spans_of):
            if piece:
                chunks.append(Chunk(index=len(chunks), text=piece, heading_path=section.heading_path,
                                    tokens=tokens))
    return chunks
