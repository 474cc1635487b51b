"""The adapters directory: one folder per registered adapter, in PEFT format.

    <adapters dir>/<name>/adapter_config.json
                         /adapter_model.safetensors
                         /appliance-adapter.json     (our record: checksum, tasks, pinned, ...)

A folder appears only complete: `add` copies and validates in a hidden temp folder
and renames it into place; a refusal deletes the temp folder, so a refused adapter
leaves no trace. Hidden entries (".*") are ours (temp folders, caches, lock).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel, Field

from lora_manager import owner_paths
from lora_manager.base_model import BaseModelSpec
from lora_manager.errors import AdapterExists, AdapterNotFound, AdapterRefused
from lora_manager.naming import check_name
from lora_manager.validation import (CONFIG_FILE, HARMLESS_FILES, WEIGHTS_FILE, AdapterFacts,
                                     ValidationLimits, check_files, validate_adapter)

log = logging.getLogger("appliance.adapters")
RECORD_FILE = "appliance-adapter.json"
TASK_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
DEFAULT_TASKS = ["chat"]


class AdapterRecord(BaseModel):
    name: str
    description: str = ""
    tasks: list[str] = Field(default_factory=lambda: list(DEFAULT_TASKS))
    pinned: bool = False
    added_at: float = 0.0
    facts: AdapterFacts
    base: BaseModelSpec  # the base it was validated against
    # For adapters the appliance trained itself: data, settings and the evaluation
    # (eval loss base vs adapter, leakage probe); see lora_manager/training/.
    training: dict[str, Any] | None = None

    @property
    def checksum(self) -> str:
        return self.facts.checksum


def check_tasks(tasks: list[str]) -> list[str]:
    bad = [t for t in tasks if not TASK_RE.match(t)]
    if bad or not tasks:
        raise AdapterRefused(f"task kinds {bad or tasks} are not valid. Fix: give one or more lower-case "
                             f"names like 'chat,code' (letters, digits, '-', '_').")
    return sorted(set(tasks))


class AdapterRegistry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- reading ---------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.root / check_name(name)

    def exists(self, name: str) -> bool:
        return (self.path(name) / RECORD_FILE).is_file()

    def get(self, name: str) -> AdapterRecord:
        record = self.path(name) / RECORD_FILE
        if not record.is_file():
            known = ", ".join(r.name for r in self.list()) or "none"
            raise AdapterNotFound(f"adapter '{name}' is not registered (registered: {known}). Fix: add it "
                                  f"with scripts/add-adapter.sh {name} /path/to/peft-adapter")
        return AdapterRecord.model_validate_json(record.read_text(encoding="utf-8"))

    def list(self) -> list[AdapterRecord]:
        if not self.root.is_dir():
            return []
        records = []
        for entry in sorted(self.root.iterdir()):
            if not entry.name.startswith(".") and (entry / RECORD_FILE).is_file():
                try:
                    records.append(AdapterRecord.model_validate_json((entry / RECORD_FILE).read_text(encoding="utf-8")))
                except (OSError, ValueError) as exc:  # one damaged record must not hide the others
                    log.warning("skipping adapter %s: unreadable %s (%s)", entry.name, RECORD_FILE, exc)
        return records

    # -- changing --------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time across processes (CLI, API, workers)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def precheck(self, name: str, source: Path, limits: ValidationLimits,
                 tasks: list[str] | None = None) -> tuple[list[str], Path]:
        """The checks that need neither the base model nor a copy (milliseconds): name,
        tasks, and the source's files. Returns the normalised tasks and source folder."""
        check_name(name)
        tasks = check_tasks(tasks or list(DEFAULT_TASKS))
        source = owner_paths.expanded(source)
        # Cheap checks on the source first, so a 5 GB pickle is refused before copying.
        check_files(source, limits)
        return tasks, source

    def add(self, name: str, source: Path, base: BaseModelSpec, limits: ValidationLimits,
            tasks: list[str] | None = None, pinned: bool = False, description: str = "",
            training: dict[str, Any] | None = None) -> AdapterRecord:
        """Validate a copy of `source` and register it as `name`; all or nothing."""
        tasks, source = self.precheck(name, source, limits, tasks)
        with self._locked():
            if self.exists(name):
                raise AdapterExists(f"adapter '{name}' is already registered. Fix: choose another name, or "
                                    f"remove it first (appliance adapters remove {name}).")
            staging = Path(tempfile.mkdtemp(prefix=f".incoming-{name}-", dir=self.root))
            try:
                for item in (CONFIG_FILE, WEIGHTS_FILE, *HARMLESS_FILES):
                    if (source / item).is_file():
                        shutil.copyfile(source / item, staging / item)
                # Validate the copy, not the source: what we checked is what we serve.
                facts = validate_adapter(staging, base, limits)
                record = AdapterRecord(name=name, description=description, tasks=tasks, pinned=pinned,
                                       added_at=time.time(), facts=facts, base=base, training=training)
                (staging / RECORD_FILE).write_text(record.model_dump_json(indent=2), encoding="utf-8")
                os.chmod(staging, 0o700)  # owner-only like the whole data dir (docs/security.md)
                os.rename(staging, self.root / name)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return record

    def update(self, name: str, *, pinned: bool | None = None, tasks: list[str] | None = None,
               description: str | None = None) -> AdapterRecord:
        with self._locked():
            record = self.get(name)
            if pinned is not None:
                record.pinned = pinned
            if tasks is not None:
                record.tasks = check_tasks(tasks)
            if description is not None:
                record.description = description
            target = self.path(name) / RECORD_FILE
            tmp = target.with_suffix(".tmp")
            tmp.write_text(record.model_dump_json(indent=2), encoding="utf-8")
            os.replace(tmp, target)
        return record

    def remove(self, name: str) -> AdapterRecord:
        with self._locked():
            record = self.get(name)
            # Rename first: the adapter disappears at once, even if deleting the files is slow.
            doomed = self.root / f".removing-{name}-{uuid.uuid4().hex[:8]}"
            os.rename(self.path(name), doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        return record

    @property
    def cache_dir(self) -> Path:
        """Derived files (converted GGUF adapters), keyed by content checksum."""
        return self.root / ".cache"
