"""Find a served base model's config.json in the Hugging Face cache by repo id.

On the GPU, vLLM serves the core by hub repo id (`--model Qwen/Qwen3-30B-A3B-FP8
--revision <pin>`) from the models volume, and /v1/models reports that repo id, not a
folder. The app containers mount the same volume read-only with the same HF_HOME, so
the LoRA manager reads the exact config.json vLLM loaded: adapters are validated
against the served base's real shapes, offline.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_dir() -> Path:
    """HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub (huggingface_hub's rules)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    return Path(home) / "hub"


def looks_like_repo_id(name: str) -> bool:
    return bool(REPO_ID.match(name)) and not Path(name).exists()


def cached_config(repo_id: str, revision: str | None = None) -> Path | None:
    """config.json of `repo_id` at `revision` (a commit or a branch such as main) in the
    local hub cache; with no usable revision, the only snapshot there is. None if absent."""
    repo_dir = hub_dir() / f"models--{repo_id.replace('/', '--')}"
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    wanted = revision or "main"
    ref = repo_dir / "refs" / wanted
    commit = ref.read_text().strip() if ref.is_file() else wanted
    candidate = snapshots / commit / "config.json"
    if candidate.is_file():
        return candidate
    if revision is None or revision == "main":
        found = [p for p in snapshots.glob("*/config.json") if p.is_file()]
        if len(found) == 1:
            return found[0]
    return None
