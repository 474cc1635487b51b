"""/adapters/train: train the owner's own LoRA adapters as background jobs.

POST   /adapters/train               start a job (202); refusals that need no model are a 400
                                     at once: rank above the server's limit, a taken name, a
                                     missing source, an empty or too small corpus, a corrupt file
GET    /adapters/train               all jobs, newest first
GET    /adapters/train/{job}         state, step/total, loss history, evaluation, error
DELETE /adapters/train/{job}         cancel (the job stops after its current step; nothing registered)
POST   /adapters/train/{job}/resume  continue a cancelled or failed job from its last checkpoint

Each job is its own process (workers/training/runner.py, nice 10), never the chat worker,
so a training run does not hold up chat. Data preparation runs during the request, in a
child process (workers/training/prepare.py), so a bad corpus is refused before a job
exists; question/answer generation (--kind knowledge) and training run in the job.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from configs.contracts.errors import BackendError
from core_agent.api.deps import get_state, require_owner
from core_agent.api.errors import error_response
from lora_manager import settings_glue
from lora_manager.training.jobs import FINISHED, Job, JobStatus, JobStore, current_status, runner_argv
from lora_manager.training.spec import TrainingSpec, preflight
from lora_manager.training.dataset import PreparedData

router = APIRouter(prefix="/adapters/train", dependencies=[Depends(require_owner)], tags=["training"])
PROJECT_ROOT = Path(__file__).resolve().parents[2]
_children: dict[str, subprocess.Popen] = {}  # reaped on every request, so no zombies pile up


def _store(request: Request) -> JobStore:
    return JobStore(settings_glue.training_dir(get_state(request).settings))


def _reap() -> None:
    for job_id, proc in list(_children.items()):
        if proc.poll() is not None:
            del _children[job_id]


def _spawn(job: Job) -> JobStatus:
    _reap()
    with open(job.log_path, "ab") as log:
        proc = subprocess.Popen(runner_argv(job), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=PROJECT_ROOT, start_new_session=True)
    _children[job.id] = proc
    return job.update(pid=proc.pid, state="queued", message="starting", error=None)


PREPARE_TIMEOUT_S = 900


def prepare_in_child(spec: TrainingSpec) -> PreparedData:
    """Gather and split the corpus in a child process (the API never parses documents
    itself); its refusal comes back as the same BackendError."""
    with tempfile.TemporaryDirectory(prefix="appliance-prepare-") as out:
        done = subprocess.run([sys.executable, "-m", "workers.training.prepare", spec.model_dump_json(), out],
                              cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=PREPARE_TIMEOUT_S)
        if done.returncode == 0:
            return PreparedData.model_validate_json((Path(out) / "prepared.json").read_text(encoding="utf-8"))
    try:
        error = json.loads(done.stdout.strip().splitlines()[-1])["error"]
    except (IndexError, ValueError, KeyError):
        raise BackendError(f"preparing the training data failed: {done.stderr.strip()[-800:]}") from None
    refused = BackendError(error["message"])
    refused.code, refused.status = error["code"], error["status"]
    raise refused


def _error(exc: BackendError) -> JSONResponse:
    return error_response(exc.status, str(exc), exc.code)


@router.post("", status_code=202)
def start_training(spec: TrainingSpec, request: Request) -> Any:
    settings = get_state(request).settings
    try:
        spec = preflight(spec, settings)
        data = prepare_in_child(spec)
    except BackendError as exc:
        return _error(exc)
    job = _store(request).create(spec)
    job.write_data(data)
    status = _spawn(job)
    return {**status.model_dump(), "data": data.report.model_dump()}


@router.get("", response_model=list[JobStatus])
def list_jobs(request: Request) -> Any:
    _reap()
    return _store(request).list()


@router.get("/{job_id}", response_model=JobStatus)
def job_status(job_id: str, request: Request) -> Any:
    _reap()
    try:
        return current_status(_store(request).get(job_id))
    except BackendError as exc:
        return _error(exc)


@router.delete("/{job_id}", status_code=202, response_model=JobStatus)
def cancel_job(job_id: str, request: Request) -> Any:
    try:
        status = _store(request).request_cancel(job_id)
    except BackendError as exc:
        return _error(exc)
    if status.state in FINISHED:
        return error_response(409, f"training job {job_id} has already ended ({status.state}); nothing to cancel.",
                              "training_finished")
    return status


@router.post("/{job_id}/resume", status_code=202, response_model=JobStatus)
def resume_job(job_id: str, request: Request) -> Any:
    try:
        job = _store(request).get(job_id)
    except BackendError as exc:
        return _error(exc)
    state = current_status(job).state
    if state not in ("failed", "cancelled"):
        return error_response(409, f"training job {job_id} is {state}; only a cancelled or failed job resumes.",
                              "training_not_resumable")
    job.cancel_flag.unlink(missing_ok=True)
    return _spawn(job)
