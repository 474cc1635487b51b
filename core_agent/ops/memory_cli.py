"""`appliance search`, `appliance docs add|remove|list`, `appliance memory reindex|status|forget`.

The CLI never opens Qdrant (the rag worker holds it): everything goes through the
running API over HTTP. `docs add` hashes files locally and uploads only new or
changed ones, in batches, with a progress bar on a terminal.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import httpx
import typer

from configs.loader import ConfigError, load_settings
from configs.private_files import private_umask
from configs.schema import Settings
from core_agent.stores.owner_token import ensure_owner_token

docs_app = typer.Typer(help="Add, list and remove the owner's documents in the memory.", no_args_is_help=True)
memory_app = typer.Typer(help="Memory index maintenance.", no_args_is_help=True)

UPLOAD_BATCH_FILES = 32
TIMEOUT_S = 900.0


@dataclass
class Api:
    settings: Settings
    client: httpx.Client

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self.client.request(method, path, **kwargs)
        except httpx.ConnectError:
            fail(f"cannot reach the API at {self.settings.api_url}. Fix: run `appliance up`.")
        except httpx.TimeoutException:
            fail(f"the API at {self.settings.api_url} did not answer in time ({TIMEOUT_S:g}s).")
        if resp.status_code >= 400:
            try:
                message = resp.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = resp.text
            fail(f"error {resp.status_code}: {message}")
        return resp.json() if resp.content else None


def fail(message: str, code: int = 1) -> None:
    typer.secho(message, fg="red", err=True)
    raise typer.Exit(code)


def api() -> Api:
    try:
        settings = load_settings()
    except ConfigError as exc:
        fail(str(exc), 2)
    token = ensure_owner_token(settings)
    client = httpx.Client(base_url=settings.api_url, headers={"Authorization": f"Bearer {token}"},
                          timeout=TIMEOUT_S)
    return Api(settings=settings, client=client)


# --- search -------------------------------------------------------------------

def search(
    query: str = typer.Argument(..., help="What to look for (Russian or English)."),
    k: int = typer.Option(5, "--k", "-k", min=1, max=100, help="How many hits."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of hits."),
    kind: Optional[str] = typer.Option(None, "--kind", help="Only 'document' or 'conversation' hits."),
    mode: str = typer.Option("hybrid", "--mode", help="hybrid, dense or lexical."),
) -> None:
    """Search the memory: the owner's documents and past conversations."""
    if kind not in (None, "document", "conversation"):
        fail("--kind must be 'document' or 'conversation'", 2)
    if mode not in ("hybrid", "dense", "lexical"):
        fail("--mode must be hybrid, dense or lexical", 2)
    body: dict[str, Any] = {"query": query, "k": k, "mode": mode}
    if kind:
        body["kinds"] = [kind]
    result = api().request("POST", "/memory/search", json=body)
    hits = [{"source": h["source"], "score": h["score"], "kind": h["kind"], "text": h["text"],
             "title": h.get("title"), "heading_path": h.get("heading_path")} for h in result["hits"]]
    if as_json:
        typer.echo(json.dumps(hits, ensure_ascii=False, indent=2))
        return
    if not hits:
        typer.echo("no hits")
    for n, hit in enumerate(hits, start=1):
        where = " > ".join(p for p in (hit["source"], hit["heading_path"]) if p)
        snippet = " ".join(hit["text"].split())[:200]
        typer.echo(f"{n}. [{hit['kind']}] {where}  (score {hit['score']:.3f})\n   {snippet}")


# --- documents -----------------------------------------------------------------

def _files(paths: list[Path], types: set[str]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix.lower() in types and not any(
                        part.startswith(".") for part in child.relative_to(path).parts):
                    yield child
        elif path.is_file():
            yield path
        else:
            fail(f"{path} does not exist", 2)


def _batches(items: list[tuple[str, Path, int]], max_bytes: int) -> Iterator[list[tuple[str, Path, int]]]:
    batch: list[tuple[str, Path, int]] = []
    size = 0
    for item in items:
        if batch and (len(batch) >= UPLOAD_BATCH_FILES or size + item[2] > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item[2]
    if batch:
        yield batch


def _progress():
    """A progress bar on the terminal's stderr (stdout stays clean for --json)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("ingesting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not sys.stderr.isatty(), transient=True, console=Console(stderr=True))


@docs_app.command("add")
def docs_add(
    paths: list[Path] = typer.Argument(..., help="Files or folders (recursive)."),
    prune: bool = typer.Option(False, "--prune", help="Also remove registered documents under these "
                                                       "folders whose files no longer exist."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Ingest .md/.txt/.pdf/.docx/.html files; unchanged files are skipped, changed ones replaced."""
    client = api()
    memory = client.settings.memory
    types = {t.lower() for t in memory.file_types}
    roots = [p.expanduser().resolve() for p in paths]
    files = list(dict.fromkeys(_files(roots, types)))
    known = {d["source"]: d["content_hash"] for root in roots
             for d in client.request("GET", "/documents", params={"prefix": str(root)})}
    report: dict[str, Any] = {"added": [], "updated": [], "unchanged": [], "duplicates": {}, "failed": [],
                              "removed": [], "chunks": 0}
    todo: list[tuple[str, Path, int]] = []
    upload_limit = client.settings.max_request_bytes - 64 * 1024  # room for the multipart envelope
    for path in files:
        source = str(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            report["failed"].append({"source": source, "reason": f"cannot read: {exc.strerror}"})
            continue
        if len(data) > upload_limit:
            report["failed"].append({"source": source, "reason": f"larger than the upload limit "
                                     f"({upload_limit} bytes; max_request_bytes in configs/appliance.yaml)"})
        elif known.get(source) == hashlib.sha256(data).hexdigest():
            report["unchanged"].append(source)
        else:
            todo.append((source, path, len(data)))
    with _progress() as bar:
        task = bar.add_task("ingest", total=len(todo))
        for batch in _batches(todo, upload_limit):
            uploads = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for _, p, _ in batch]
            form = {"sources": [s for s, _, _ in batch]}
            part = client.request("POST", "/documents", files=uploads, data=form)
            for key in ("added", "updated", "unchanged", "failed"):
                report[key] += part[key]
            report["duplicates"].update(part["duplicates"])
            report["chunks"] += part["chunks"]
            bar.advance(task, len(batch))
    if prune:
        present = {str(p) for p in files}
        gone = [s for s in known if s not in present and not Path(s).exists()]
        if gone:
            report["removed"] = client.request("DELETE", "/documents", params={"source": gone})["removed"]
    _print_report(report, as_json)
    if report["failed"]:
        raise typer.Exit(1)


def _print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    typer.echo(f"added {len(report['added'])}, updated {len(report['updated'])}, unchanged "
               f"{len(report['unchanged'])}, duplicates {len(report['duplicates'])}, removed "
               f"{len(report['removed'])}, failed {len(report['failed'])}; {report['chunks']} chunks indexed")
    for copy, original in report["duplicates"].items():
        typer.echo(f"  same content as {original}: {copy}")
    for failure in report["failed"]:
        typer.secho(f"  skipped {failure['source']}: {failure['reason']}", fg="yellow", err=True)


@docs_app.command("remove")
def docs_remove(sources: list[str] = typer.Argument(..., help="Documents to forget: paths as ingested "
                                                              "(relative paths are also tried as absolute).")) -> None:
    """Forget documents: removed from the index and the document registry."""
    # `docs add` records absolute paths; uploads keep the name they were given. Try both.
    names = {s: list(dict.fromkeys([s, str(Path(s).expanduser().absolute())])) for s in sources}
    result = api().request("DELETE", "/documents", params={"source": [n for ns in names.values() for n in ns]})
    removed = set(result["removed"])
    for given, candidates in names.items():
        hit = next((n for n in candidates if n in removed), None)
        if hit:
            typer.echo(f"removed {hit}")
        else:
            typer.secho(f"not ingested: {given}", fg="yellow", err=True)


@docs_app.command("list")
def docs_list(prefix: Optional[str] = typer.Option(None, "--prefix"),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """List ingested documents."""
    documents = api().request("GET", "/documents", params={"prefix": prefix} if prefix else None)
    if as_json:
        typer.echo(json.dumps(documents, ensure_ascii=False, indent=2))
        return
    for d in documents:
        extra = f"  (same as {d['duplicate_of']})" if d.get("duplicate_of") else ""
        typer.echo(f"{d['chunk_count']:>5} chunks  {d['source']}{extra}")


# --- memory maintenance ------------------------------------------------------------

@memory_app.command("reindex")
def memory_reindex() -> None:
    """Rebuild the index from the conversation store and the document registry (e.g. after
    changing the embedding model)."""
    result = api().request("POST", "/memory/reindex")
    typer.echo(f"documents re-indexed: {result['document_chunks']} chunks; conversation turns queued for "
               f"indexing: {result['turns_queued']} (indexed in the background; `appliance memory status`)")


@memory_app.command("status")
def memory_status() -> None:
    """Collections, sizes and the number of turns waiting to be indexed."""
    typer.echo(json.dumps(api().request("GET", "/memory/status"), indent=2))


@memory_app.command("forget-conversation")
def memory_forget(conversation_id: str) -> None:
    """Delete a conversation from the store and the memory index."""
    api().request("DELETE", f"/memory/conversations/{conversation_id}")
    typer.echo(f"forgot conversation {conversation_id}")


@memory_app.command("backup")
def memory_backup(archive: Optional[Path] = typer.Argument(
        None, help="Archive to write (default: <data dir>/backups/appliance-<time>.tar.gz).")) -> None:
    """Back up the conversation store, the document registry and the Qdrant index into one archive
    (safe while the appliance runs)."""
    from core_agent.ops.memory_backup import BackupError, create_backup

    settings = _plain_settings()
    target = archive or settings.data_dir / "backups" / time.strftime("appliance-%Y%m%d-%H%M%S.tar.gz")
    try:
        manifest = create_backup(settings, target.expanduser().resolve())
    except BackupError as exc:
        fail(str(exc))
    index_files = sum(name.startswith(("qdrant/", "memory-edge/")) for name in manifest.files)
    index = f"{index_files} index files" if manifest.qdrant in ("edge", "local") else \
        f"index on the Qdrant server {manifest.qdrant} not included: run `appliance memory reindex` after a restore"
    typer.echo(f"backup written: {target} ({len(manifest.files)} files; {index})")


@memory_app.command("restore")
def memory_restore(archive: Path = typer.Argument(..., exists=True, dir_okay=False,
                                                  help="An archive made by `appliance memory backup`.")) -> None:
    """Restore a backup into the data directory (the appliance must be stopped; replaced files are
    moved aside, not deleted)."""
    from core_agent.ops.memory_backup import BackupError, restore_backup

    settings = _plain_settings()
    try:
        manifest, aside = restore_backup(settings, archive.expanduser().resolve())
    except BackupError as exc:
        fail(str(exc))
    typer.echo(f"restored {len(manifest.files)} files from {archive} into {settings.data_dir}")
    if aside.exists():
        typer.echo(f"the files it replaced are in {aside}")
    if manifest.qdrant not in ("edge", "local"):
        typer.echo("the index lives on a Qdrant server: start the appliance and run `appliance memory reindex`")


def _plain_settings() -> Settings:
    private_umask()  # backups and restored files hold conversations: owner-only
    try:
        return load_settings()
    except ConfigError as exc:
        fail(str(exc), 2)
    raise AssertionError  # unreachable: fail() exits
