"""Lexical sparse vectors from Qdrant's own BM25 (qdrant-edge-py `Bm25`), per script.

Qdrant's Bm25 tokenizes, lower-cases, drops the language's stop words, stems with
that language's Snowball stemmer and hashes each term to a sparse index; one model
handles one language. The owner mixes Russian and English, often in one note, so
each word goes to the model of its script: Cyrillic words to the Russian model,
everything else to the English one, and the two sparse vectors are merged (their
terms never coincide: a word has one script). BM25 length normalisation is then per
script part, a small difference from one model over the whole text. "ё" is folded
to "е" first, as people type either. The IDF factor comes from the collection
(sparse vector modifier idf), as with our own encoder (rag/lexical.py).

Runs in the rag worker for either engine (the vectors are computed client-side),
so both engines index the same vectors. Compared with rag/lexical.py by
bench/rag_eval.py; which one is configured (memory.lexical.encoder) and why:
docs/memory.md.
"""

from __future__ import annotations

import re

from configs.schema import LexicalConfig
from rag.lexical import SparseVector

WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)
CYRILLIC_RE = re.compile(r"[а-яё]", re.IGNORECASE)


def split_by_script(text: str) -> tuple[str, str]:
    """(Cyrillic words, other words), each joined by spaces, in order."""
    cyrillic, other = [], []
    for word in WORD_RE.findall(text.lower().replace("ё", "е")):
        (cyrillic if CYRILLIC_RE.search(word) else other).append(word)
    return " ".join(cyrillic), " ".join(other)


def _merge(*vectors) -> SparseVector:
    weights: dict[int, float] = {}
    for vector in vectors:
        for index, value in zip(vector.indices, vector.values):
            weights[index] = weights.get(index, 0.0) + float(value)
    items = sorted(weights.items())
    return SparseVector(indices=[i for i, _ in items], values=[v for _, v in items])


class QdrantBm25Encoder:
    def __init__(self, config: LexicalConfig) -> None:
        from qdrant_edge import Bm25, Bm25Config

        def model(language: str) -> Bm25:
            return Bm25(Bm25Config(k=config.k1, b=config.b, avg_len=config.avg_doc_terms, language=language))

        self.russian, self.english = model("russian"), model("english")

    def document(self, text: str) -> SparseVector:
        ru, other = split_by_script(text)
        return _merge(*(m.embed_document(t) for m, t in ((self.russian, ru), (self.english, other)) if t))

    def query(self, text: str) -> SparseVector:
        ru, other = split_by_script(text)
        merged = _merge(*(m.embed_query(t) for m, t in ((self.russian, ru), (self.english, other)) if t))
        return SparseVector(indices=merged.indices, values=[1.0] * len(merged.indices))
