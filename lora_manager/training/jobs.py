"""A training job on disk, so every process (CLI, API, the job runner, the UI via the
API) sees the same state and a crashed or cancelled job can resume.

    <data_dir>/training/<job id>/spec.json        what to train (TrainingSpec)
                                 /data/            train.jsonl, eval.jsonl, report.json (prepared once)
                                 /status.json      state, progress, loss history, evaluation, error
                                 /checkpoints/     step-NNNNNN/ (adapter + optimizer state + step)
                                 /output/adapter/  the final PEFT adapter (registered from here)
                                 /cancel           present = the owner asked to stop
                                 /job.log          the runner's output

status.json is rewritten atomically (temp file + rename); only the runner writes it
while it runs, the API only reads it and creates the cancel flag.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, WithJsonSchema

from configs.processes import process_alive
from lora_manager.errors import AdapterNotFound
from lora_manager.training.dataset import Example, PreparedData, PrepReport
from lora_manager.training.spec import TrainingSpec

JobState = Literal["queued", "preparing", "generating", "training", "evaluating", "registering",
                   "done", "failed", "cancelled"]
FINISHED = {"done", "failed", "cancelled"}
# One [step, loss] pair. Its schema is written out because pydantic's own (a JSON Schema
# 2020-12 `prefixItems` tuple) is misread by OpenAPI tools that still think in draft 4
# (schemathesis rejected the whole response schema of every /adapters/train route).
LossPoint = Annotated[tuple[int, float], WithJsonSchema({
    "type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2,
    "description": "[step, training loss]"})]


class JobStatus(BaseModel):
    job: str
    name: str
    kind: str
    state: JobState = "queued"
    message: str = ""
    step: int = 0
    total_steps: int = 0
    loss_history: list[LossPoint] = Field(default_factory=list)
    train_examples: int = 0
    eval_examples: int = 0
    resumed_from: int | None = None
    evaluation: dict[str, Any] | None = None
    adapter: str | None = None          # set when registered
    error: dict[str, Any] | None = None  # {"message", "type", "code"} like the API's errors
    pid: int | None = None
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    seconds: float = 0.0


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


class Job:
    def __init__(self, folder: Path) -> None:
        self.dir = Path(folder)

    @property
    def id(self) -> str:
        return self.dir.name

    # --- spec and data ---------------------------------------------------------
    def spec(self) -> TrainingSpec:
        return TrainingSpec.model_validate_json((self.dir / "spec.json").read_text(encoding="utf-8"))

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    def has_data(self) -> bool:
        return (self.data_dir / "report.json").is_file()

    def write_data(self, data: PreparedData) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=".data-", dir=self.dir))
        for split in ("train", "eval"):
            lines = [e.model_dump_json(exclude_none=True) for e in getattr(data, split)]
            (tmp / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (tmp / "report.json").write_text(data.report.model_dump_json(indent=2), encoding="utf-8")
        old = self.dir / f".data-old-{uuid.uuid4().hex[:6]}"
        if self.data_dir.exists():  # replaced (knowledge: chunks -> generated pairs)
            os.rename(self.data_dir, old)
        os.rename(tmp, self.data_dir)  # the data appears complete or not at all
        shutil.rmtree(old, ignore_errors=True)

    def read_data(self) -> PreparedData:
        def examples(split: str) -> list[Example]:
            text = (self.data_dir / f"{split}.jsonl").read_text(encoding="utf-8")
            return [Example.model_validate_json(line) for line in text.splitlines() if line.strip()]
        report = PrepReport.model_validate_json((self.data_dir / "report.json").read_text(encoding="utf-8"))
        return PreparedData(train=examples("train"), eval=examples("eval"), report=report)

    # --- status ----------------------------------------------------------------
    def status(self) -> JobStatus:
        return JobStatus.model_validate_json((self.dir / "status.json").read_text(encoding="utf-8"))

    def write_status(self, status: JobStatus) -> JobStatus:
        status.updated_at = time.time()
        _write_atomic(self.dir / "status.json", status.model_dump_json(indent=1))
        return status

    def update(self, **changes: Any) -> JobStatus:
        return self.write_status(self.status().model_copy(update=changes))

    # --- cancel ----------------------------------------------------------------
    @property
    def cancel_flag(self) -> Path:
        return self.dir / "cancel"

    def cancel_requested(self) -> bool:
        return self.cancel_flag.exists()

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def output_dir(self) -> Path:
        return self.dir / "output" / "adapter"

    @property
    def log_path(self) -> Path:
        return self.dir / "job.log"


# The job runner lives in workers/ (it needs rag's parsers and the queues); lora_manager
# starts it as a process by module name and never imports it.
RUNNER_MODULE = "workers.training.runner"


def runner_argv(job: Job, as_json: bool = False) -> list[str]:
    return [sys.executable, "-m", RUNNER_MODULE, "--job-dir", str(job.dir)] + (["--json"] if as_json else [])


class JobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def create(self, spec: TrainingSpec) -> Job:
        self.root.mkdir(parents=True, exist_ok=True)
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        tmp = Path(tempfile.mkdtemp(prefix=f".new-{job_id}-", dir=self.root))
        (tmp / "spec.json").write_text(spec.model_dump_json(indent=2), encoding="utf-8")
        status = JobStatus(job=job_id, name=spec.name, kind=spec.kind)
        (tmp / "status.json").write_text(status.model_dump_json(indent=1), encoding="utf-8")
        os.rename(tmp, self.root / job_id)
        return Job(self.root / job_id)

    def get(self, job_id: str) -> Job:
        folder = self.root / job_id
        if job_id.startswith(".") or "/" in job_id or not (folder / "status.json").is_file():
            raise AdapterNotFound(f"training job '{job_id}' does not exist. Fix: list the jobs with "
                                  f"GET /adapters/train.")
        return Job(folder)

    def list(self) -> list[JobStatus]:
        if not self.root.is_dir():
            return []
        out = []
        for folder in sorted(self.root.iterdir(), reverse=True):
            if not folder.name.startswith(".") and (folder / "status.json").is_file():
                out.append(current_status(Job(folder)))
        return out

    def request_cancel(self, job_id: str) -> JobStatus:
        """Ask a running job to stop (it finishes its current step, keeps its checkpoints,
        registers nothing). A finished job is left as it is."""
        job = self.get(job_id)
        status = current_status(job)
        if status.state in FINISHED:
            return status
        job.cancel_flag.touch()
        if process_alive(status.pid):
            try:
                os.kill(status.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        return status


def current_status(job: Job) -> JobStatus:
    """The status as written, corrected when the runner died without saying so."""
    status = job.status()
    if status.state not in FINISHED and status.pid and not process_alive(status.pid):
        status = status.model_copy(update={
            "state": "failed", "error": {"message": f"the training process (pid {status.pid}) ended without "
                                                    f"finishing; see {job.log_path}. Fix: resume the job.",
                                         "type": "training_error", "code": "training_died"}})
    return status
