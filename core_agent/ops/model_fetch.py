"""What scripts/fetch-models.sh downloads: every model the VRAM plan serves, at its
pinned revision, into the Hugging Face cache the vLLM servers mount (MODELS_DIR/hf).

The plan of the download is pure (testable here, `--dry-run --json`); the download
itself uses huggingface_hub.snapshot_download, which resumes partial files and shows
progress. After it, the stack runs with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml
from pydantic import BaseModel

from core_agent.ops.vram_plan import UNPINNED_REVISION, VramPlan, pins_file_for

GB = 10**9
# Room for vLLM's and torch.compile's caches beside the weights.
CACHE_HEADROOM_BYTES = 10 * GB
# Only what vLLM loads: weights, configs, tokenizer, templates (no ONNX/GGUF/original
# checkpoints some repos also carry).
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.py", "*.tiktoken"]
# Repos without safetensors (bge-m3's weights are pytorch_model.bin).
BIN_REPOS = {"BAAI/bge-m3": ["pytorch_model.bin"]}


class FetchItem(BaseModel):
    repo: str
    revision: str
    pinned: bool
    services: list[str]
    download_bytes: int
    present: bool
    allow_patterns: list[str]


class FetchPlan(BaseModel):
    hf_home: str
    items: list[FetchItem]
    needed_bytes: int          # what is still to download (missing models)
    free_bytes: int
    headroom_bytes: int = CACHE_HEADROOM_BYTES

    @property
    def fits_on_disk(self) -> bool:
        return self.free_bytes >= self.needed_bytes + (self.headroom_bytes if self.needed_bytes else 0)


def snapshot_dir(hf_home: Path, repo: str, revision: str) -> Path | None:
    """The cached snapshot of repo@revision (a commit, or a ref such as main), if any."""
    repo_dir = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    ref = repo_dir / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    snap = repo_dir / "snapshots" / commit
    return snap if (snap / "config.json").is_file() else None


def free_bytes(path: Path) -> int:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def fetch_plan(plan: VramPlan, hf_home: Path) -> FetchPlan:
    items: dict[str, FetchItem] = {}
    for s in plan.services:
        if s.hf_repo in items:
            items[s.hf_repo].services.append(s.service)
            continue
        size = s.facts.download_gb * GB if s.facts.download_gb else s.weights_bytes
        items[s.hf_repo] = FetchItem(
            repo=s.hf_repo, revision=s.revision, pinned=s.facts.revision is not None, services=[s.service],
            download_bytes=round(size), present=snapshot_dir(hf_home, s.hf_repo, s.revision) is not None,
            allow_patterns=ALLOW_PATTERNS + BIN_REPOS.get(s.hf_repo, []))
    listed = list(items.values())
    return FetchPlan(hf_home=str(hf_home), items=listed,
                     needed_bytes=sum(i.download_bytes for i in listed if not i.present),
                     free_bytes=free_bytes(hf_home))


class FetchError(Exception):
    """The download cannot start or failed; the message says what to do."""


def check_hub_reachable(repo: str, revision: str, timeout_s: float = 10.0) -> str:
    """The commit `revision` resolves to on the hub; FetchError (fast) when unreachable."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise FetchError("HF_HUB_OFFLINE is set: downloading needs the network. Fix: run it as "
                         "HF_HUB_OFFLINE=0 ./scripts/fetch-models.sh")
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HfHubHTTPError

    try:
        info = HfApi().model_info(repo, revision=revision, timeout=timeout_s)
    except HfHubHTTPError as exc:
        raise FetchError(f"the Hugging Face hub refused {repo}@{revision}: {exc}. Fix: check the name and "
                         f"revision in configs/gpu-stack.yaml (and HF_TOKEN in .env for gated models).") from None
    except Exception as exc:  # DNS, proxy, TLS, timeout: all mean "no hub from here"
        raise FetchError(f"cannot reach the Hugging Face hub (huggingface.co) to fetch {repo}: "
                         f"{exc.__class__.__name__}: {exc}. Fix: connect this machine to the internet (or set "
                         f"HTTPS_PROXY), or copy a Hugging Face cache holding the models into MODELS_DIR/hf.") from None
    return str(info.sha)


def write_pins(stack_file: Path, pins: dict[str, str]) -> Path:
    """Record repo -> commit in configs/model-pins.yaml (merged with what is there)."""
    path = pins_file_for(stack_file)
    current = {}
    if path.exists():
        current = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("revisions", {})
    current.update(pins)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("# Written by ./scripts/fetch-models.sh --pin: the commit each model is served at.\n"
                   + yaml.safe_dump({"revisions": current}, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    return path


def download(item: FetchItem, hf_home: Path) -> Path:
    from huggingface_hub import snapshot_download

    # Resumable: snapshot_download keeps partial files and continues them.
    return Path(snapshot_download(repo_id=item.repo, revision=item.revision, cache_dir=hf_home / "hub",
                                  allow_patterns=item.allow_patterns))


def unpinned(fp: FetchPlan) -> list[str]:
    return [i.repo for i in fp.items if not i.pinned or i.revision == UNPINNED_REVISION]
