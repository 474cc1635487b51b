"""Lexical (BM25-style) sparse vectors with Russian and English stemming.

Documents get BM25 term-frequency weights tf*(k1+1)/(tf + k1*(1-b+b*len/avg));
queries get weight 1 per distinct term. The IDF factor is applied by Qdrant at
search time (sparse vector `modifier: idf`), so it always reflects the current
collection and nothing has to be rewritten when documents are added.

Each word is stemmed by the stemmer of its script (Cyrillic: Russian Snowball,
Latin: English Snowball), which makes "памяти"/"память" and "running"/"runs" meet.
Terms map to sparse indices by a stable 32-bit hash (blake2b), identical in every
process and version.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import snowballstemmer

from configs.schema import LexicalConfig

WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)
CYRILLIC_RE = re.compile(r"[а-яё]")
LATIN_RE = re.compile(r"[a-z]")

# Function words carry no topic; dropping them keeps query vectors short and sharp.
STOPWORDS_EN = frozenset("""
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most my
myself no nor not now of off on once only or other our ours ourselves out over own same she should so
some such than that the their theirs them themselves then there these they this those through to too
under until up very was we were what when where which while who whom why will with would you your
yours yourself yourselves
""".split())
STOPWORDS_RU = frozenset("""
а без более бы был была были было быть в вам вас весь во вот все всего всех вы где да даже для до его
ее её если есть еще ещё же за здесь и из или им их к как ко когда кто ли либо мне может мы на надо наш
не него нее неё нет ни них но ну о об однако он она они оно от очень по под при с со так также такой там
те тем то того тоже той только том ты у уже хотя чего чей чем что чтобы чье чья эта эти это я
""".split())


@lru_cache(maxsize=2)
def _stemmer(language: str):  # one per process: the rag worker stems in a single thread
    return snowballstemmer.stemmer(language)


@lru_cache(maxsize=500_000)
def stem(language: str, word: str) -> str:
    """Snowball in pure Python costs ~20 us a word; a vault repeats its words, so cache."""
    return _stemmer(language).stemWord(word)


def word_language(word: str) -> str | None:
    if CYRILLIC_RE.search(word):
        return "ru"
    if LATIN_RE.search(word):
        return "en"
    return None


def terms(text: str) -> list[str]:
    """Stemmed, stopword-free terms of `text`, in order. Numbers are kept as they are."""
    out: list[str] = []
    for raw in WORD_RE.findall(text.lower().replace("ё", "е")):
        lang = word_language(raw)
        if lang == "ru":
            if raw in STOPWORDS_RU:
                continue
            out.append(stem("russian", raw))
        elif lang == "en":
            if raw in STOPWORDS_EN:
                continue
            out.append(stem("english", raw))
        elif raw.isdigit() or len(raw) > 1:
            out.append(raw)
    return out


def detect_language(text: str) -> str:
    """'ru', 'en' or 'other' by which script most letters use (enough to route fusion)."""
    cyr = len(CYRILLIC_RE.findall(text.lower()))
    lat = len(LATIN_RE.findall(text.lower()))
    if cyr == 0 and lat == 0:
        return "other"
    return "ru" if cyr >= lat else "en"


@lru_cache(maxsize=200_000)
def term_index(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=4).digest(), "little")


@dataclass
class SparseVector:
    indices: list[int]
    values: list[float]

    def __bool__(self) -> bool:
        return bool(self.indices)


class LexicalEncoder:
    def __init__(self, config: LexicalConfig) -> None:
        self.config = config

    def _vector(self, weights: dict[int, float]) -> SparseVector:
        items = sorted(weights.items())
        return SparseVector(indices=[i for i, _ in items], values=[v for _, v in items])

    def document(self, text: str) -> SparseVector:
        counts = Counter(terms(text))
        length = sum(counts.values())
        k1, b = self.config.k1, self.config.b
        norm = k1 * (1 - b + b * length / self.config.avg_doc_terms)
        weights: dict[int, float] = {}
        for term, tf in counts.items():
            # Two terms hashing to one index simply add up (rare: 2^32 buckets).
            idx = term_index(term)
            weights[idx] = weights.get(idx, 0.0) + tf * (k1 + 1) / (tf + norm)
        return self._vector(weights)

    def query(self, text: str) -> SparseVector:
        return self._vector({term_index(t): 1.0 for t in set(terms(text))})

