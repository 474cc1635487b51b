"""Training data from the appliance's own queues (real stack, real workers):

- memory:<query> -> the `rag` worker's search: the notes ingested into the memory come
  back as documents (grouped by source, so the split stays by document);
- --kind knowledge -> the `chat` worker (llama.cpp, the core model) writes a
  question/answer pair per chunk under a JSON schema; held-out pairs come only from
  held-out documents.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_manager.training.dataset import SourceDocument, prepare
from lora_manager.training.spec import TrainingSpec
from tests.conftest import Stack
from workers.training import knowledge
from workers.training.sources import gather

# Training on two busy CPU cores takes minutes; the default 600 s per test is too short.
pytestmark = pytest.mark.timeout(1200)
ROOT = Path(__file__).resolve().parents[1]
NOTES = ROOT / "tests" / "fixtures" / "owner_notes"


def test_memory_source_reads_ingested_notes_through_the_rag_queue(stack: Stack) -> None:
    notes = sorted(NOTES.iterdir())
    with stack.http() as client:
        files = [("files", (f"training-notes/{p.name}", p.read_bytes())) for p in notes]
        report = client.post("/documents", files=files)
        assert report.status_code == 200, report.text
    spec = TrainingSpec(name="from-memory", sources=["memory:Margin notes patience garden"], eval_share=0.25)
    lines: list[str] = []
    docs = gather(spec, stack.settings, lines.append)
    found = {d.doc for d in docs if "training-notes/" in d.doc}
    assert len(found) >= 4, (found, lines)
    assert all(d.doc.startswith("memory:") and d.text for d in docs)
    data = prepare(docs, 0.25)
    assert not {e.doc for e in data.eval} & {e.doc for e in data.train}


def test_knowledge_pairs_are_written_by_the_core_model_through_the_chat_queue(stack: Stack) -> None:
    docs = [SourceDocument(doc=p.name, text=p.read_text(encoding="utf-8")) for p in sorted(NOTES.iterdir())[:3]]
    data = prepare(docs, 0.34, kind="knowledge")  # 2 notes to train on, 1 held out: 3 model calls
    lines: list[str] = []
    pairs = knowledge.generate(data, stack.settings, "core", lines.append)
    assert pairs.train and pairs.eval
    for example in pairs.train + pairs.eval:
        assert [m["role"] for m in example.messages] == ["user", "assistant"]
        assert all(m["content"].strip() for m in example.messages)
    # Pairs keep their document: held-out pairs come from held-out notes only.
    assert {e.doc for e in pairs.eval} <= {e.doc for e in data.eval}
    assert {e.doc for e in pairs.train} <= {e.doc for e in data.train}
    assert any("question/answer pairs" in line for line in lines)
