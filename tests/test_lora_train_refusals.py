"""Training refusals: each a clear message and exit code, nothing half-registered.

A corrupt source file, an empty corpus, a corpus too small for the held-out split, a
rank above the runtime's limit (and bad usage of scripts/train-adapter.sh). These fail
before any model is loaded, so they take seconds. The adapters folder must stay exactly
as it was: no adapter, no hidden staging folder, no converted file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTES = ROOT / "tests" / "fixtures" / "owner_notes"


def appliance(args: list[str], data: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "APPLIANCE_DATA_DIR": str(data)}
    return subprocess.run([sys.executable, "-m", "core_agent.ops.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def snapshot(data: Path) -> list[str]:
    adapters = data / "adapters"
    return sorted(str(p.relative_to(adapters)) for p in adapters.rglob("*")) if adapters.exists() else []


def refused(data: Path, args: list[str]) -> subprocess.CompletedProcess:
    before = snapshot(data)
    done = appliance(["adapters", "train", *args], data)
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert snapshot(data) == before  # nothing half-registered
    listed = appliance(["adapters", "list", "--json"], data)
    assert listed.stdout.strip() == "[]", listed.stdout
    return done


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_corrupt_source_file_is_named(data: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(NOTES, corpus)
    (corpus / "scan.pdf").write_bytes(b"this is not a pdf at all")
    done = refused(data, ["mine", str(corpus)])
    assert "scan.pdf" in done.stderr and "not a PDF" in done.stderr and "Fix:" in done.stderr


def test_empty_corpus(data: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "empty"
    corpus.mkdir()
    (corpus / "photo.png").write_bytes(b"\x89PNG\r\n")
    (corpus / "stub.md").write_text("# Title only\n\nok\n", encoding="utf-8")
    done = refused(data, ["mine", str(corpus)])
    assert "no usable text" in done.stderr and "Fix:" in done.stderr


def test_corpus_too_small_for_the_eval_split(data: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "small"
    corpus.mkdir()
    for note in sorted(NOTES.iterdir())[:3]:
        shutil.copy(note, corpus)
    # Duplicates do not count: a copy of a note under another name is dropped before the split.
    shutil.copy(sorted(NOTES.iterdir())[0], corpus / "copy-of-first.md")
    done = refused(data, ["mine", str(corpus)])  # default held-out share 10% needs 10 documents
    assert "3 usable document(s)" in done.stderr and "needs at least 10" in done.stderr
    assert "--eval-share" in done.stderr


def test_rank_above_the_runtime_limit(data: Path) -> None:
    done = refused(data, ["mine", str(NOTES), "--rank", "128"])
    assert "rank 128" in done.stderr and "max LoRA rank 64" in done.stderr
    assert not (data / "training").exists()  # refused before a job was even created


def test_taken_name_and_jsonl_errors(data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "chats.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
                   'not json\n', encoding="utf-8")
    done = refused(data, ["mine", str(bad), "--eval-share", "0.4"])
    assert "chats.jsonl line 2 is not JSON" in done.stderr
    no_answer = tmp_path / "no-answer.jsonl"
    no_answer.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n', encoding="utf-8")
    assert "no assistant answer" in refused(data, ["mine", str(no_answer)]).stderr


def test_train_script_usage(data: Path) -> None:
    env = {**os.environ, "APPLIANCE_DATA_DIR": str(data)}

    def script(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["scripts/train-adapter.sh", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)

    usage = script("--help")
    assert usage.returncode == 0 and "Usage: scripts/train-adapter.sh NAME SOURCE..." in usage.stdout
    assert "--eval-share" in usage.stdout and "memory:<query>" in usage.stdout
    missing = script("mine")
    assert missing.returncode == 2 and "NAME and at least one SOURCE are required" in missing.stderr
    nowhere = script("mine", str(data / "nope"))
    assert nowhere.returncode == 2 and "does not exist" in nowhere.stderr
    unknown = script("mine", str(NOTES), "--turbo")
    assert unknown.returncode == 2 and "unknown option: --turbo" in unknown.stderr
    no_value = script("mine", str(NOTES), "--rank")
    assert no_value.returncode == 2 and "--rank needs a value" in no_value.stderr
