"""The memory library on its own: real Qdrant Edge (the embedded engine), real MiniLM, no queues.

Covers what the API tests do not reach cheaply: stemming, chunking, parsers,
incremental ingest, dedup, nothing half-indexed, forgetting, the collection check.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from configs.schema import Settings
from rag.chunking import chunk_sections, count_tokens
from rag.lexical import LexicalEncoder, terms
from rag.parsers import ParseError, Section, parse_file
from configs.contracts.memory import SearchRequest, TurnToIndex
from rag.service import MemoryService
from rag.engines import open_store
from rag.store import CollectionMismatch, EmbeddingSpec
from tests.support.memory_vault import BAD_FILES, NOTES, PDF_LINES, pdf_bytes
from workers.backends.registry import embedding_backend


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory):
    # Defaults of configs/schema.py (= configs/memory.yaml), independent of other config files.
    return Settings(data_dir=tmp_path_factory.mktemp("memory-lib"))


@pytest.fixture(scope="module")
def service(settings):
    svc = MemoryService(settings, embedding_backend(settings))
    yield svc
    svc.close()


def vault_files() -> list[tuple[str, bytes]]:
    files = [(name, text.encode()) for name, text in NOTES.items()]
    files.append(("manuals/heat-pump.pdf", pdf_bytes(PDF_LINES)))
    files += list(BAD_FILES.items())
    return files


def top_source(service: MemoryService, query: str, **kw) -> str:
    hits = service.search(SearchRequest(query=query, k=5, **kw)).hits
    assert hits, f"no hits for {query!r}"
    return hits[0].source


def test_russian_and_english_words_are_stemmed_to_shared_terms() -> None:
    assert terms("болезни") == terms("болезнь") == terms("болезнью")
    assert terms("Восхождение") == terms("восхождения")
    assert terms("running runs") == ["run", "run"]
    assert terms("и the на of") == []  # function words carry no topic


def test_lexical_vectors_weight_repeated_terms_less_than_linearly() -> None:
    enc = LexicalEncoder(Settings().memory.lexical)
    one = enc.document("борщ")
    three = enc.document("борщ борщ борщ")
    assert one.indices == three.indices
    assert one.values[0] < three.values[0] < 3 * one.values[0]


def test_chunks_respect_size_overlap_and_heading_path() -> None:
    words = " ".join(f"word{i}." for i in range(300))
    chunks = chunk_sections([Section("A > B", words)], size=100, overlap=20)
    assert len(chunks) >= 3
    assert all(c.tokens <= 100 for c in chunks)
    assert all(c.heading_path == "A > B" for c in chunks)
    first_tail = chunks[0].text.split()[-5:]
    assert any(w in chunks[1].text.split() for w in first_tail), "consecutive chunks overlap"
    assert count_tokens("Hello, мир!") == 4


def test_markdown_keeps_heading_path_and_front_matter() -> None:
    doc = parse_file(NOTES["en/cabin.md"].encode(), "en/cabin.md")
    assert doc.title == "Cabin in the woods"
    assert doc.meta["tags"] == ["cabin", "energy"]
    assert [s.heading_path for s in doc.sections] == ["Cabin in the woods > Solar power",
                                                      "Cabin in the woods > Water"]


@pytest.mark.parametrize("name,data,reason", [
    ("empty.md", b"  \n", "empty"),
    ("cp1251.txt", "Привет".encode("cp1251"), "UTF-8"),
    *[(n, d, "") for n, d in BAD_FILES.items()],
    ("table.xlsx", b"PK\x03\x04", "unsupported"),
])
def test_bad_files_are_refused_with_a_reason(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason or None):
        parse_file(data, name)


def test_html_and_docx_keep_their_headings(tmp_path: Path) -> None:
    html = b"<html><head><title>Garden</title><script>x()</script></head><body><h1>Garden</h1>" \
           b"<h2>Tomatoes</h2><p>Water the tomatoes at dawn.</p></body></html>"
    doc = parse_file(html, "garden.html")
    assert doc.title == "Garden"
    assert doc.sections[0].heading_path == "Garden > Tomatoes" and "dawn" in doc.sections[0].text
    import docx

    d = docx.Document()
    d.add_heading("Отчёт", level=1)
    d.add_paragraph("Квартальный отчёт отправлен в налоговую.")
    d.save(tmp_path / "report.docx")
    doc = parse_file((tmp_path / "report.docx").read_bytes(), "report.docx")
    assert doc.sections[0].heading_path == "Отчёт" and "налоговую" in doc.sections[0].text


def test_ingest_reports_bad_files_and_indexes_the_rest(service: MemoryService) -> None:
    report = service.ingest(vault_files())
    assert sorted(f.source for f in report.failed) == sorted(BAD_FILES)
    assert sorted(report.added) == sorted([*NOTES, "manuals/heat-pump.pdf"])
    assert not service.registry.get("broken.pdf"), "a refused file leaves nothing behind"
    assert service.store.count("documents", {"source": "broken.pdf"}) == 0


def test_search_finds_the_right_file_in_both_languages(service: MemoryService) -> None:
    assert top_source(service, "how many solar panels charge the battery") == "en/cabin.md"
    assert top_source(service, "oven temperature for baking bread") == "en/sourdough.md"
    assert top_source(service, "как варить борщ со свёклой") == "ru/borsch.md"
    assert top_source(service, "акклиматизация при восхождении") == "ru/elbrus.md"
    assert top_source(service, "when to clean the heat pump coil") == "manuals/heat-pump.pdf"
    hit = service.search(SearchRequest(query="photovoltaic panels snow", k=1)).hits[0]
    assert hit.heading_path == "Cabin in the woods > Solar power"


def test_unchanged_is_skipped_changed_is_replaced_copy_is_deduplicated(service: MemoryService) -> None:
    again = service.ingest([("en/sourdough.md", NOTES["en/sourdough.md"].encode())])
    assert again.unchanged == ["en/sourdough.md"] and again.chunks == 0

    copy = service.ingest([("copies/sourdough.md", NOTES["en/sourdough.md"].encode())])
    assert copy.duplicates == {"copies/sourdough.md": "en/sourdough.md"}
    assert service.store.count("documents", {"source": "copies/sourdough.md"}) == 0

    changed = "# Sourdough bread\n\nNow baked in a cast iron dutch oven with the lid on.\n"
    report = service.ingest([("en/sourdough.md", changed.encode())])
    assert report.updated == ["en/sourdough.md"]
    texts = [p["text"] for p in service.store.scroll_payloads("documents", {"source": "en/sourdough.md"})]
    assert texts and all("dutch oven" in t for t in texts), "old chunks are gone"
    # The copy kept the old content, so it is indexed on its own now.
    assert service.store.count("documents", {"source": "copies/sourdough.md"}) > 0
    assert top_source(service, "rye flour starter fed twice a day") == "copies/sourdough.md"


def test_forgetting_a_document_removes_it_from_index_and_registry(service: MemoryService) -> None:
    service.ingest([("tmp/secret.md", b"# Secret\nThe safe combination is 31-41-59.")])
    assert top_source(service, "safe combination") == "tmp/secret.md"
    assert service.remove(["tmp/secret.md", "never/there.md"]).missing == ["never/there.md"]
    assert service.registry.get("tmp/secret.md") is None
    hits = service.search(SearchRequest(query="safe combination", k=5)).hits
    assert all(h.source != "tmp/secret.md" for h in hits)


def test_turns_are_searchable_excludable_and_forgettable(service: MemoryService) -> None:
    now = time.time()
    service.index_turns([
        TurnToIndex(message_id=901, conversation_id="c-bike", role="user", created_at=now,
                    content="My bicycle is a green Surly named Rocinante."),
        TurnToIndex(message_id=902, conversation_id="c-ru", role="user", created_at=now,
                    content="Мою собаку зовут Пельмень, она любит морковку."),
    ])
    hits = service.search(SearchRequest(query="what is my bicycle called", k=3, kinds=["conversation"])).hits
    assert hits[0].source == "conversation:c-bike" and hits[0].message_id == 901
    assert top_source(service, "как зовут собаку", kinds=["conversation"]) == "conversation:c-ru"
    hits = service.search(SearchRequest(query="bicycle Rocinante", k=3, exclude_message_ids=[901])).hits
    assert all(h.message_id != 901 for h in hits)
    service.forget_conversations(["c-bike"])
    assert service.store.count("turns", {"conversation_id": "c-bike"}) == 0


def test_a_collection_built_for_another_model_is_a_clear_error(service: MemoryService, settings) -> None:
    other = EmbeddingSpec(model="bge-m3", dimension=1024)
    with pytest.raises(CollectionMismatch, match="appliance memory reindex"):
        open_store(settings.memory, settings.data_dir, other)


def test_reindex_rebuilds_documents_from_the_registry(service: MemoryService) -> None:
    before = service.store.count("documents")
    service.store.drop("documents")
    assert service.reindex_documents() == before
    assert top_source(service, "как варить борщ со свёклой") == "ru/borsch.md"
