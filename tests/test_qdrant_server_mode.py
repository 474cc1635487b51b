"""Qdrant server mode (memory.engine 'qdrant', rag/store_qdrant.py), the compose stack's
memory engine, tested as far as this machine allows.

A real Qdrant server cannot run here: no Docker engine (compose.yaml's qdrant/qdrant
image cannot start), no `qdrant` package in Debian (`apt-cache search qdrant` finds
nothing) and no server on PyPI or npm (qdrant-client, qdrant-edge-py and the many
integrations are clients or in-process engines; @testcontainers/qdrant needs Docker).
See docs/memory.md.

So this module tests everything short of a real server answering:
- the store's data path (upsert, filtered hybrid search, delete) through
  QdrantServerStore itself on qdrant-client's local mode, the same client API the
  class calls on a server (tests/test_memory_edge.py runs its filters the same way);
- what goes over the wire: qdrant-client's real REST transport talks to
  FakeQdrantServer, a local HTTP listener that records each request and answers the
  few endpoints collection set-up needs. Its answers are not hand-written: it
  replays each recorded creation into qdrant-client's local mode and returns the
  collection info Qdrant's own models produce. The recorded requests are checked
  against literals written from Qdrant's REST API (PUT /collections/{name} with
  named dense vectors per embedding model, a sparse `lexical` vector with the IDF
  modifier; PUT /collections/{name}/index per filtered payload field) and carry the
  api-key header compose configures;
- that choosing the server is configuration only (APPLIANCE_MEMORY__* as compose
  sets them), and a misconfiguration is a clear error naming the key.

Broken builds this catches (tried): dropping the payload-index loop in
QdrantServerStore._create -> the index requests are missing; naming the dense
vector "dense" for every model -> the vectors body differs; open_store ignoring the
engine -> the Edge store opens and no request reaches the listener.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from pydantic import ValidationError
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from configs.loader import get_settings, load_settings
from configs.schema import MemoryConfig, Settings
from rag.engines import open_store
from rag.lexical import SparseVector
from rag.store import CollectionMismatch, EmbeddingSpec
from rag.store_edge import EdgeStore
from rag.store_qdrant import QdrantServerStore

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "test-qdrant-key-42"


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    body: Any
    headers: dict[str, str]


class FakeQdrantServer:
    """A stand-in for a Qdrant server, which cannot run on this machine (no Docker, no
    server package): a real HTTP listener that records every request qdrant-client's
    REST transport sends and answers the collection set-up endpoints. Its state is a
    qdrant-client local-mode instance: a creation request is replayed into it and
    GET /collections/{name} returns what Qdrant's own models make of that. Any other
    endpoint answers 501 naming itself, so a test that strays fails loudly."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.local = QdrantClient(":memory:")
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                path, _, query = self.path.partition("?")
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                fake.requests.append(RecordedRequest(self.command, path, query, body,
                                                     {k.lower(): v for k, v in self.headers.items()}))
                status, result = fake.answer(self.command, path, body)
                # GET / is Qdrant's version banner (unwrapped); every API answer is wrapped.
                wrapped = result if path == "/" else {
                    "result": result, "status": "ok" if status < 400 else {"error": result}, "time": 0.0}
                data = json.dumps(wrapped).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _serve

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_port}"

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "GET" and path == "/":
            # qdrant-client compares its version with the server's at connect time.
            return 200, {"title": "qdrant - vector search engine (FakeQdrantServer)", "version": "1.20.0"}
        if m := re.fullmatch(r"/collections/([^/]+)/exists", path):
            return 200, {"exists": self.local.collection_exists(m.group(1))}
        if m := re.fullmatch(r"/collections/([^/]+)", path):
            name = m.group(1)
            if method == "PUT":
                create = qm.CreateCollection.model_validate(body)
                self.local.create_collection(name, vectors_config=create.vectors,
                                             sparse_vectors_config=create.sparse_vectors, metadata=create.metadata)
                return 200, True
            if method == "GET" and self.local.collection_exists(name):
                return 200, self.local.get_collection(name).model_dump(mode="json", exclude_none=True)
            return 404, f"Collection `{name}` doesn't exist!"
        if (m := re.fullmatch(r"/collections/([^/]+)/index", path)) and method == "PUT":
            index = qm.CreateFieldIndex.model_validate(body)
            self.local.create_payload_index(m.group(1), index.field_name, index.field_schema)
            return 200, {"operation_id": len(self.requests), "status": "completed"}
        return 501, f"FakeQdrantServer does not implement {method} {path}"

    def calls(self, method: str | None = None) -> list[RecordedRequest]:
        return [r for r in self.requests if method is None or r.method == method]

    def close(self) -> None:
        self.http.shutdown()
        self.local.close()


@pytest.fixture
def fake_qdrant() -> Iterator[FakeQdrantServer]:
    server = FakeQdrantServer()
    try:
        yield server
    finally:
        server.close()


def server_config(url: str, **extra: Any) -> MemoryConfig:
    return MemoryConfig(engine="qdrant", qdrant_url=url, qdrant_api_key=API_KEY, **extra)


SPEC = EmbeddingSpec(model="all-MiniLM-L6-v2", dimension=384)


def test_collections_are_created_on_the_server_as_qdrant_expects(fake_qdrant: FakeQdrantServer,
                                                                 tmp_path: Path) -> None:
    config = server_config(fake_qdrant.url)
    store = open_store(config, tmp_path, SPEC)
    try:
        assert isinstance(store, QdrantServerStore)
    finally:
        store.close()
    assert not list(tmp_path.iterdir()), "server mode writes no index files locally"
    assert all(r.headers.get("api-key") == API_KEY for r in fake_qdrant.requests), "every call authenticates"

    prefix = config.collection_prefix
    creates = [r for r in fake_qdrant.calls("PUT") if not r.path.endswith("/index")]
    assert [r.path for r in creates] == [f"/collections/{prefix}_documents", f"/collections/{prefix}_turns"]
    vector_name = SPEC.vector_name
    assert vector_name != "dense" and "minilm" in vector_name.lower(), "one dense vector name per model"
    for create in creates:
        # Qdrant REST: CreateCollection {vectors: {name: VectorParams}, sparse_vectors: {name: SparseVectorParams}}
        assert create.body["vectors"] == {vector_name: {"size": 384, "distance": "Cosine"}}
        assert create.body["sparse_vectors"] == {"lexical": {"modifier": "idf"}}
        assert create.body["metadata"] == {"embedding_model": "all-MiniLM-L6-v2"}

    for name in (f"{prefix}_documents", f"{prefix}_turns"):
        indexes = {r.body["field_name"]: r.body["field_schema"] for r in fake_qdrant.calls("PUT")
                   if r.path == f"/collections/{name}/index"}
        # The fields search filters use (rag/store.py), typed as Qdrant payload schemas.
        assert indexes == {"kind": "keyword", "source": "keyword", "conversation_id": "keyword",
                           "namespace": "keyword", "tags": "keyword", "content_hash": "keyword",
                           "message_id": "integer", "created_at": "float"}
        assert all("wait=true" in r.query for r in fake_qdrant.calls("PUT") if r.path.endswith("/index"))


def test_reopening_checks_the_servers_collections_and_refuses_another_model(
        fake_qdrant: FakeQdrantServer, tmp_path: Path) -> None:
    open_store(server_config(fake_qdrant.url), tmp_path, SPEC).close()
    created = len(fake_qdrant.calls("PUT"))

    open_store(server_config(fake_qdrant.url), tmp_path, SPEC).close()
    assert len(fake_qdrant.calls("PUT")) == created, "an existing collection is checked, never re-created"
    reads = [r.path for r in fake_qdrant.calls("GET") if r.path.count("/") == 2]
    assert reads[-2:] == ["/collections/appliance_documents", "/collections/appliance_turns"], reads

    with pytest.raises(CollectionMismatch) as refused:
        open_store(server_config(fake_qdrant.url), tmp_path, EmbeddingSpec(model="bge-m3", dimension=1024))
    message = str(refused.value)
    assert "bge-m3" in message and "appliance memory reindex" in message
    assert len(fake_qdrant.calls("PUT")) == created, "a mismatch changes nothing on the server"


def test_the_store_code_round_trips_points_on_qdrant_clients_local_mode(tmp_path: Path) -> None:
    """The data path of the same class, on the client API it uses against a server."""
    spec = EmbeddingSpec(model="probe", dimension=3)
    store = QdrantServerStore(MemoryConfig(), spec, client=QdrantClient(path=str(tmp_path / "local")))
    try:
        store.upsert("turns", ["00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"],
                     [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [SparseVector([3], [1.0]), SparseVector([4], [1.0])],
                     [{"kind": "turn", "conversation_id": "a", "text": "first"},
                      {"kind": "turn", "conversation_id": "b", "text": "second"}])
        dense, lexical = store.search("turns", [0.9, 0.1, 0.0], SparseVector([3], [1.0]), 5)
        assert dense[0].payload["text"] == "first" and [p.payload["text"] for p in lexical] == ["first"]
        dense, _ = store.search("turns", [0.9, 0.1, 0.0], None, 5, where={"conversation_id": "b"})
        assert [p.payload["text"] for p in dense] == ["second"]
        store.delete("turns", {"conversation_id": "a"})
        assert store.count("turns") == 1
    finally:
        store.close()


def test_choosing_the_server_is_configuration_only(fake_qdrant: FakeQdrantServer, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The same settings loader and open_store: only APPLIANCE_MEMORY__* differ, as in compose.yaml."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    compose_env = json.dumps(compose)
    assert '"APPLIANCE_MEMORY__QDRANT_URL": "http://qdrant:6333"' in compose_env

    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    edge = open_store(load_settings().memory, tmp_path, EmbeddingSpec(model="probe", dimension=3))
    try:
        assert isinstance(edge, EdgeStore)
    finally:
        edge.close()
    assert not fake_qdrant.requests

    monkeypatch.setenv("APPLIANCE_MEMORY__QDRANT_URL", fake_qdrant.url)   # engine 'auto' (the default) follows
    monkeypatch.setenv("APPLIANCE_MEMORY__QDRANT_API_KEY", API_KEY)
    get_settings.cache_clear()
    try:
        served = open_store(load_settings().memory, tmp_path, EmbeddingSpec(model="probe", dimension=3))
    finally:
        get_settings.cache_clear()
    try:
        assert isinstance(served, QdrantServerStore)
    finally:
        served.close()
    assert fake_qdrant.calls("PUT"), "the collections were created on the configured server"


def test_server_engine_without_a_url_is_a_clear_configuration_error() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings.model_validate({"memory": {"engine": "qdrant"}})
    assert "qdrant_url" in str(refused.value)
