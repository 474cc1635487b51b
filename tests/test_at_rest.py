"""At rest: the data directory is 0700 and nothing in it is readable by anyone but the owner.

A real stack starts on a data directory that does not exist yet (so the code creates
it), with no APPLIANCE_API_KEY (so it writes owner.token), and is used until the
stores exist: conversations and tasks (a chat turn), the memory index (Qdrant's
local files, after the turn is indexed), webhook jobs, Redis' files, logs and PID
records. Then every file and folder under the data directory is stat'ed.

Broken build watched failing: without the umask in configs/private_files.py the
databases, Qdrant's files and the logs come out 0644 and folders 0755.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Iterator

import pytest

from rag.store import edge_dir
from configs.private_files import protect_data_dir
from tests.conftest import Stack, running_stack, stack_env


@pytest.fixture(scope="module")
def fresh_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("at-rest") / "not-yet" / "data"
    env = stack_env(data_dir)
    env.pop("APPLIANCE_API_KEY")  # the stack must generate and store its own token
    saved_key = os.environ.pop("APPLIANCE_API_KEY", None)  # set by the session stack, if it runs
    try:
        with running_stack(env) as stack:
            yield stack
    finally:
        if saved_key is not None:
            os.environ["APPLIANCE_API_KEY"] = saved_key


def _loose(path: Path) -> str | None:
    mode = stat.S_IMODE(path.lstat().st_mode)
    return f"{path} is {mode:04o}" if mode & (stat.S_IRWXG | stat.S_IRWXO) else None


def _wait_for(path: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} was never created"
        time.sleep(0.2)


def test_every_file_of_a_running_stack_is_owner_only(fresh_stack: Stack) -> None:
    settings = fresh_stack.settings
    data = settings.data_dir
    with fresh_stack.http() as http:
        resp = http.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8, "temperature": 0})
        assert resp.status_code == 200, resp.text
        http.post("/webhooks/summarize", json={"text": "x"})  # opens the webhook job store
        # Holding a conversation open keeps SQLite's -wal/-shm files around to be checked.
        assert http.get("/conversations").status_code == 200
    _wait_for(data / "webhooks.sqlite3")
    memory = edge_dir(settings.memory, data)  # the embedded Qdrant Edge index (rag/store.py)
    _wait_for(memory)

    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE(settings.token_file.stat().st_mode) == 0o600
    assert settings.token_file.read_text().strip() == fresh_stack.token
    found = [p for p in data.rglob("*")]
    names = {p.name for p in found}
    assert {"conversations.sqlite3", "tasks.sqlite3", "webhooks.sqlite3", "owner.token"} <= names, names
    assert any(p.suffix == ".log" for p in found) and any(p.is_relative_to(memory) for p in found)
    loose = [problem for p in found if (problem := _loose(p))]
    assert not loose, "readable by others:\n" + "\n".join(loose)


def test_an_existing_loose_data_dir_is_tightened(tmp_path: Path) -> None:
    """A data dir left by an older version (0755, a 0644 database) is made private on start."""
    data = tmp_path / "old"
    (data / "memory").mkdir(parents=True)
    data.chmod(0o755)
    (data / "memory").chmod(0o755)
    db = data / "conversations.sqlite3"
    db.write_text("x")
    db.chmod(0o644)
    umask = os.umask(0o022)
    try:
        protect_data_dir(data)
        created = data / "new.sqlite3"
        created.write_text("y")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "memory").stat().st_mode) == 0o700
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(created.stat().st_mode) == 0o600  # created under the private umask
