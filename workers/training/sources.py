"""SOURCE arguments -> SourceDocuments, and the prepared (split) data of a job.

- a folder: every file of a type the memory ingests (rag/parsers.py: .md .txt .pdf .docx
  .html), recursively, hidden files skipped; other files are listed as skipped.
  A file that claims a supported type but cannot be read refuses the whole training
  (naming the file): silently training on part of the owner's corpus would hide it.
- a file: one document of those types, or a .jsonl of chat examples
  ({"messages": [...], "doc": optional group id}; each line is its own document
  unless lines share a "doc").
- memory:<query>: chunks and past turns the memory finds (rag.search through the
  `rag` queue; for style, only the owner's own turns, role "user").
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Callable

from configs.contracts.memory import RAG_SEARCH, SearchRequest
from configs.contracts.tasks import StreamEvent, TaskResult, result_value, stream_key
from configs.schema import Settings
from lora_manager.training.dataset import PreparedData, SourceDocument, check_messages, prepare
from lora_manager.training.spec import MEMORY_PREFIX, TrainingRefused, TrainingSpec
from rag.parsers import PARSERS, ParseError, parse_file

Say = Callable[[str], None]
MEMORY_HITS = 100
QUEUE_TIMEOUT_S = 120.0


def _parse(path: Path, label: str) -> SourceDocument:
    try:
        document = parse_file(path.read_bytes(), path.name)
    except ParseError as exc:
        raise TrainingRefused(f"cannot read {label}: {exc}. Fix: repair the file or move it out of the "
                              f"training sources; nothing was trained.") from None
    except OSError as exc:
        raise TrainingRefused(f"cannot open {label}: {exc.strerror}.") from None
    return SourceDocument(doc=label, text=document.text)


def _jsonl(path: Path) -> list[SourceDocument]:
    groups: dict[str, list[list[dict[str, str]]]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="strict").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TrainingRefused(f"{where} is not JSON ({exc.msg}). Fix: one JSON object per line, like "
                                  f'{{"messages": [{{"role": "user", "content": "..."}}, ...]}}.') from None
        if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
            raise TrainingRefused(f"{where} has no \"messages\" list. Fix: one chat example per line: "
                                  f'{{"messages": [{{"role": "user", ...}}, {{"role": "assistant", ...}}]}}.')
        doc = str(row.get("doc") or f"{path}#{number}")
        groups.setdefault(doc, []).append(check_messages(row["messages"], where))
    # One SourceDocument per example; examples of one "doc" share its id, so they stay on one side of the split.
    return [SourceDocument(doc=doc, messages=m) for doc, examples in groups.items() for m in examples]


def from_path(source: str, say: Say) -> list[SourceDocument]:
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix.lower() == ".jsonl":
            return _jsonl(path)
        return [_parse(path, str(path))]
    if not path.is_dir():
        raise TrainingRefused(f"source {source} does not exist.")
    docs, skipped = [], []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if file.suffix.lower() == ".jsonl":
            docs += _jsonl(file)
        elif file.suffix.lower() in PARSERS:
            docs.append(_parse(file, str(file)))
        else:
            skipped.append(str(relative))
    if skipped:
        say(f"skipped {len(skipped)} file(s) of other types: {', '.join(skipped[:5])}"
            + (" ..." if len(skipped) > 5 else ""))
    return docs


def call_queue(settings: Settings, task_name: str, payload: dict, timeout_s: float = QUEUE_TIMEOUT_S) -> TaskResult:
    """Send a task through our own queues and wait for its result on the task's event
    stream (the same stream contract the core's dispatcher reads)."""
    import redis

    from workers.celery_app import create_celery_app

    task_id = uuid.uuid4().hex
    create_celery_app(settings).send_task(task_name, args=[payload], task_id=task_id)
    client = redis.Redis.from_url(settings.redis_url)
    queue = task_name.split(".", 1)[0]
    deadline, last_id = time.monotonic() + timeout_s, "0-0"
    try:
        while time.monotonic() < deadline:
            reply = client.xread({stream_key(task_id): last_id}, block=1000, count=256)
            for entry_id, fields in (reply[0][1] if reply else []):
                last_id = entry_id
                event = StreamEvent.model_validate_json(fields[b"e"])
                if event.type == "done" and event.result is not None:
                    return event.result
                if event.type == "error" and event.error is not None:
                    raise TrainingRefused(f"the {queue} task failed: {event.error.message}")
    finally:
        client.close()
    raise TrainingRefused(f"no '{queue}' worker answered within {timeout_s:g}s. Fix: start the appliance "
                          f"(appliance up; appliance status shows what runs).")


def from_memory(query: str, kind: str, settings: Settings) -> list[SourceDocument]:
    try:
        result = call_queue(settings, RAG_SEARCH, SearchRequest(query=query, k=MEMORY_HITS).model_dump())
    except TrainingRefused as exc:
        raise TrainingRefused(f"the memory search for {query!r} failed: {exc}") from None
    texts: dict[str, list[str]] = {}
    for hit in result_value(result)["hits"]:
        # Style learns the owner's voice: his own turns, not the model's answers.
        if hit["kind"] == "conversation" and kind == "style" and hit.get("role") != "user":
            continue
        texts.setdefault(hit["source"], []).append(hit["text"])
    return [SourceDocument(doc=f"memory:{source}", text="\n\n".join(parts)) for source, parts in texts.items()]


def gather(spec: TrainingSpec, settings: Settings, say: Say) -> list[SourceDocument]:
    docs: list[SourceDocument] = []
    for source in spec.sources:
        if source.startswith(MEMORY_PREFIX):
            found = from_memory(source[len(MEMORY_PREFIX):].strip(), spec.kind, settings)
        else:
            found = from_path(source, say)
        say(f"{source}: {len(found)} document(s)")
        docs += found
    return docs


def prepare_data(spec: TrainingSpec, settings: Settings, say: Say = lambda line: None) -> PreparedData:
    """Gather, deduplicate, filter and split; TrainingRefused when the corpus cannot train."""
    data = prepare(gather(spec, settings, say), spec.eval_share, spec.seed, spec.kind)
    r = data.report
    say(f"{r.documents} document(s) -> {r.train_examples} training example(s) from {r.train_documents} document(s), "
        f"{r.eval_examples} held-out example(s) from {r.eval_documents} document(s); dropped {r.duplicate_documents} "
        f"duplicate document(s), {r.duplicate_examples} duplicate piece(s), {r.too_short} too short")
    return data
