"""Backup and restore of the memory: archive, verify, restore, and the restored memory answers."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from configs.schema import Settings
from core_agent.stores.conversations import ConversationStore
from core_agent.ops import launcher
from core_agent.ops.memory_backup import BackupError, create_backup, restore_backup
from configs.contracts.memory import SearchRequest, TurnToIndex
from rag.service import MemoryService
from workers.backends.registry import embedding_backend


def memory(settings: Settings) -> MemoryService:
    return MemoryService(settings, embedding_backend(settings))


@pytest.fixture()
def filled(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path / "live")
    store = ConversationStore(settings.conversations_db)
    cid = store.create("garden").id
    message = store.append(cid, "user", "The greenhouse key hangs behind the kitchen door.")
    svc = memory(settings)
    svc.ingest([("notes/tea.md", "# Tea\nGreen tea steeps for two minutes at 80 degrees.".encode())])
    svc.index_turns([TurnToIndex(message_id=message.id, conversation_id=cid, role="user",
                                 content=message.content, created_at=message.created_at)])
    svc.close()
    return settings


def test_backup_restores_into_an_empty_data_directory(filled: Settings, tmp_path: Path) -> None:
    archive = tmp_path / "backup.tar.gz"
    manifest = create_backup(filled, archive)
    assert manifest.qdrant == "edge" and "conversations.sqlite3" in manifest.files
    assert any(name.startswith("memory-edge/") for name in manifest.files)

    fresh = Settings(data_dir=tmp_path / "fresh")
    restore_backup(fresh, archive)
    assert [c.title for c in ConversationStore(fresh.conversations_db).list()] == ["garden"]
    svc = memory(fresh)
    try:
        assert svc.search(SearchRequest(query="how long to steep green tea", k=1)).hits[0].source == "notes/tea.md"
        hit = svc.search(SearchRequest(query="greenhouse key", k=1, kinds=["conversation"])).hits[0]
        assert "kitchen door" in hit.text
    finally:
        svc.close()


def test_restore_over_live_data_moves_the_old_files_aside(filled: Settings, tmp_path: Path) -> None:
    archive = tmp_path / "backup.tar.gz"
    create_backup(filled, archive)
    svc = memory(filled)
    svc.remove(["notes/tea.md"])
    svc.close()
    _, aside = restore_backup(filled, archive)
    assert (aside / "conversations.sqlite3").is_file() and (aside / "memory-edge").is_dir()
    svc = memory(filled)
    try:
        assert svc.registry.get("notes/tea.md") is not None, "the removed document is back"
    finally:
        svc.close()


def test_a_damaged_archive_changes_nothing(filled: Settings, tmp_path: Path) -> None:
    archive = tmp_path / "backup.tar.gz"
    create_backup(filled, archive)
    archive.write_bytes(archive.read_bytes()[:200])
    before = sorted(p.name for p in filled.data_dir.iterdir())
    with pytest.raises(BackupError, match="not a readable appliance backup"):
        restore_backup(filled, archive)
    assert sorted(p.name for p in filled.data_dir.iterdir()) == before


def test_restore_refuses_while_the_appliance_runs(filled: Settings, tmp_path: Path) -> None:
    archive = tmp_path / "backup.tar.gz"
    create_backup(filled, archive)
    # The launcher's own record of a running service (this live test process stands in for it).
    filled.run_dir.mkdir(parents=True, exist_ok=True)
    argv = Path("/proc/self/cmdline").read_bytes().decode().split("\0")[:-1]
    (filled.run_dir / "worker-rag.json").write_text(json.dumps(
        {"pid": os.getpid(), "argv": argv, "started": time.time(), **launcher.process_identity(os.getpid())}))
    with pytest.raises(BackupError, match="appliance down"):
        restore_backup(filled, archive)
