"""The data directory is private: 0700, and everything in it owner-only (0600/0700).

It holds conversations, the owner token, API keys, webhook jobs, the adapter registry,
Qdrant's files and logs. Rather than chmod each file after the fact (a window where
it is readable, and every new store must remember), each process that writes there
sets its umask to 077 before it creates anything: SQLite databases and their -wal and
-shm files, Qdrant's folders, Redis' AOF, log files and the token are then created
owner-only by construction, and child processes (the launcher's workers, Redis)
inherit the umask. Entry points call `protect_data_dir` (launcher, API, Celery
worker) or `private_umask` (CLIs); docs/security.md, "At rest".
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
GROUP_OTHER = stat.S_IRWXG | stat.S_IRWXO


def private_umask() -> None:
    """Files and folders this process creates from now on are owner-only."""
    os.umask(PRIVATE_UMASK)


def protect_data_dir(data_dir: Path) -> None:
    """Owner-only umask, the data directory created 0700 (or brought back to it), and
    group/other bits removed from what an older version left in it."""
    private_umask()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for folder, dirs, files in os.walk(data_dir):
        for path in (folder, *(os.path.join(folder, name) for name in dirs + files)):
            try:
                mode = os.lstat(path).st_mode
                if not stat.S_ISLNK(mode) and mode & GROUP_OTHER:
                    os.chmod(path, stat.S_IMODE(mode) & ~GROUP_OTHER)
            except OSError:  # vanished meanwhile, or not ours: leave it
                pass
