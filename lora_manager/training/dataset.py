"""Documents -> training and evaluation examples: dedup, length filter, split by document.

The split is by DOCUMENT, never by example: every piece of a held-out document is in
the evaluation set and none in training, so the eval loss measures text the adapter
never saw. Duplicated documents (same text after normalising case and whitespace) are
dropped before the split, or a copy in training would leak the eval text.
A corpus too small to hold out at least one document is refused with the numbers.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Literal

from pydantic import BaseModel, Field

from lora_manager.training.spec import TrainingRefused

MIN_CHARS = 40          # shorter pieces teach nothing but the end-of-text token
MAX_CHARS = 2000        # prose pieces are grouped paragraphs up to this size
ROLES = {"system", "user", "assistant"}


class SourceDocument(BaseModel):
    """One unit of the split: a file, a conversation, a JSONL example (or its `doc` group)."""

    doc: str
    text: str = ""                                   # prose (style training)
    messages: list[dict[str, str]] | None = None     # a chat example


class Example(BaseModel):
    doc: str
    text: str | None = None
    messages: list[dict[str, str]] | None = None


class PrepReport(BaseModel):
    documents: int = 0                 # usable documents after dedup and filtering
    duplicate_documents: int = 0
    duplicate_examples: int = 0
    too_short: int = 0
    train_documents: int = 0
    eval_documents: int = 0
    train_examples: int = 0
    eval_examples: int = 0
    eval_docs: list[str] = Field(default_factory=list)
    qa_generated: bool = False         # knowledge: chunks already turned into question/answer pairs


class PreparedData(BaseModel):
    train: list[Example]
    eval: list[Example]
    report: PrepReport


def normalized(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _digest(text: str) -> str:
    return hashlib.sha256(normalized(text).encode()).hexdigest()


def prose_pieces(text: str, max_chars: int = MAX_CHARS) -> list[str]:
    """Paragraphs grouped into pieces of at most max_chars (a longer paragraph stays whole;
    the trainer cuts it into token windows)."""
    pieces, current = [], ""
    for para in (p.strip() for p in re.split(r"\n\s*\n", text)):
        if not para:
            continue
        if current and len(current) + len(para) + 2 > max_chars:
            pieces.append(current)
            current = para
        else:
            current = f"{current}\n\n{para}" if current else para
    if current:
        pieces.append(current)
    return pieces


def _content_of(doc: SourceDocument) -> str:
    if doc.messages is not None:
        return "\n".join(f"{m.get('role')}: {m.get('content')}" for m in doc.messages)
    return doc.text


def check_messages(messages: list[dict[str, str]], where: str) -> list[dict[str, str]]:
    """A chat example: roles among system/user/assistant, string contents, an assistant reply."""
    clean = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ROLES or \
                not isinstance(message.get("content"), str):
            raise TrainingRefused(f"{where}: each message needs a role (system, user or assistant) and a text "
                                  f"content; got {str(message)[:120]!r}. Fix: write lines like "
                                  f'{{"messages": [{{"role": "user", "content": "..."}}, '
                                  f'{{"role": "assistant", "content": "..."}}]}}.')
        clean.append({"role": message["role"], "content": message["content"]})
    if not any(m["role"] == "assistant" and m["content"].strip() for m in clean):
        raise TrainingRefused(f"{where}: the example has no assistant answer to learn. Fix: end it with an "
                              f'{{"role": "assistant", "content": "..."}} message.')
    return clean


def _examples(doc: SourceDocument) -> tuple[list[Example], int]:
    """Examples of one document and how many pieces were too short."""
    if doc.messages is not None:
        answer = sum(len(m["content"]) for m in doc.messages if m["role"] == "assistant")
        return ([Example(doc=doc.doc, messages=doc.messages)], 0) if answer >= 1 else ([], 1)
    pieces = prose_pieces(doc.text)
    kept = [p for p in pieces if len(p) >= MIN_CHARS]
    return [Example(doc=doc.doc, text=p) for p in kept], len(pieces) - len(kept)


def split_documents(docs: list[str], eval_share: float, seed: int) -> tuple[list[str], list[str]]:
    """(train docs, eval docs): a seeded, order-independent choice of floor(n x share) documents."""
    n_eval = math.floor(len(docs) * eval_share + 1e-9)
    needed = math.ceil(1 / eval_share - 1e-9)
    if n_eval < 1 or len(docs) - n_eval < 1:
        raise TrainingRefused(
            f"the corpus has {len(docs)} usable document(s) (after removing duplicates and pieces under "
            f"{MIN_CHARS} characters): too few to hold out {eval_share:.0%} of them for evaluation, which "
            f"needs at least {max(needed, 2)}. Fix: add documents, or raise --eval-share (0.25 needs 4, "
            f"0.4 needs 3).")
    ranked = sorted(docs, key=lambda d: hashlib.sha256(f"{seed}:{d}".encode()).hexdigest())
    return sorted(ranked[n_eval:]), sorted(ranked[:n_eval])


def prepare(documents: list[SourceDocument], eval_share: float, seed: int = 0,
            kind: Literal["style", "knowledge"] = "style") -> PreparedData:
    """Deduplicate, filter, split by document. Raises TrainingRefused when nothing or too little is left."""
    report = PrepReport()
    seen_docs: set[str] = set()
    by_doc: dict[str, list[Example]] = {}
    seen_examples: set[str] = set()
    for doc in documents:
        digest = _digest(_content_of(doc))
        if digest in seen_docs:
            report.duplicate_documents += 1
            continue
        seen_docs.add(digest)
        examples, short = _examples(doc)
        report.too_short += short
        for example in examples:
            key = _digest(example.text or str(example.messages))
            if key in seen_examples:  # the same paragraph in two documents: keep the first only
                report.duplicate_examples += 1
                continue
            seen_examples.add(key)
            by_doc.setdefault(doc.doc, []).append(example)
    if not by_doc:
        raise TrainingRefused(
            f"the sources hold no usable text ({len(documents)} document(s) read, {report.duplicate_documents} "
            f"duplicate(s), {report.too_short} piece(s) under {MIN_CHARS} characters). Fix: point at a folder "
            f"of your own writing (.md, .txt, .pdf, .docx, .html), a .jsonl of chat examples, or a memory: "
            f"query that finds something.")
    train_docs, eval_docs = split_documents(sorted(by_doc), eval_share, seed)
    train = [e for d in train_docs for e in by_doc[d]]
    held_out = [e for d in eval_docs for e in by_doc[d]]
    report.documents = len(by_doc)
    report.train_documents, report.eval_documents = len(train_docs), len(eval_docs)
    report.train_examples, report.eval_examples = len(train), len(held_out)
    report.eval_docs = eval_docs
    return PreparedData(train=train, eval=held_out, report=report)
