"""Build a cached artefact once, atomically: into a temp folder beside it, then renamed.

Tests and benches running at the same time may ask for the same tiny model, adapter or
twin: whoever finishes first wins the rename, the others see a complete target and use
it. A build that dies half-way leaves only its temp folder, removed on the way out, never
a half-written target that a later run would take for a finished one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def build_once(target: Path, is_complete: Callable[[Path], bool], build: Callable[[Path], None]) -> Path:
    """`target` after `build(out)` wrote a not-yet-existing folder `out` (skipped when
    `is_complete(target)` already holds)."""
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        out = tmp / "out"
        build(out)
        try:
            os.rename(out, target)
        except OSError:
            if not is_complete(target):  # nobody else finished it either: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
