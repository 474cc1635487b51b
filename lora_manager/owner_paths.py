"""Paths the owner typed (an adapter folder, a training source, a base model folder),
looked at without letting a strange string crash the caller.

`Path.expanduser()` raises RuntimeError for `~someone` who does not exist, and
`Path.exists()` / `is_dir()` raise OSError for a name longer than the filesystem
allows (ENAMETOOLONG). Both are just "no such folder" for the owner; the callers turn
that into their usual 400 refusal that names the path and the fix.
"""

from __future__ import annotations

from pathlib import Path


def expanded(text: str | Path) -> Path:
    """`~` expanded; an unknown `~user` stays literal (and then simply does not exist)."""
    path = Path(text)
    try:
        return path.expanduser()
    except RuntimeError:
        return path


def exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False
