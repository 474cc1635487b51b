"""Webhook routes: POST /webhooks/{name} (hooks from configs/webhooks.yaml), GET /jobs/{id}.

These routes do not take the owner token: each hook authenticates its callers itself
(HMAC signature or the hook's bearer token; core_agent/webhooks/service.py). GET /jobs/{id}
accepts the owner token, the job's hook token, or the job id signed with the hook's secret.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.responses import JSONResponse

from core_agent.api.deps import get_state
from core_agent.api.errors import error_response
from core_agent.stores.webhook_jobs import Job
from core_agent.webhooks.service import (
    JOBS_FILE,
    WebhookError,
    WebhookService,
    check_content_type,
    check_idempotency_key,
    find_hook,
    parse_body,
    too_large,
)

router = APIRouter(tags=["webhooks"])


async def service_for(request: Request) -> WebhookService:
    """The process's WebhookService, created on first use inside the running event loop
    (creation has no await, so two requests cannot both create one)."""
    return service_of(request.app)


def service_of(app: FastAPI) -> WebhookService:
    app_state = app.state
    if getattr(app_state, "webhooks", None) is None:
        state = app_state.appliance
        app_state.webhooks = WebhookService(state.settings, state.chat, state.store)
    return app_state.webhooks


def resume_jobs(app: FastAPI) -> None:
    """At API start: jobs a killed API process left are finished now (their answers and
    callbacks), not at the next webhook request. No job store yet: nothing to resume."""
    if (app.state.appliance.settings.data_dir / JOBS_FILE).exists():
        service_of(app)


def _failed(exc: WebhookError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.code)


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _job_response(job: Job, status: int = 200) -> JSONResponse:
    headers = {"Location": f"/jobs/{job.id}", "X-Job-Id": job.id}
    return JSONResponse(job.model_dump(mode="json"), status_code=status, headers=headers)


def _answer(job: Job) -> JSONResponse:
    """Sync reply: the finished job (200), its error with the job (error status), or 202 while it runs."""
    if job.status == "succeeded":
        return _job_response(job)
    if job.status == "failed":
        err = job.error or {}
        status = int(err.get("status") or 500)
        body = {"error": {"message": err.get("message", "the job failed"), "type": "job_failed",
                          "code": err.get("code")}, "job": job.model_dump(mode="json")}
        return JSONResponse(body, status_code=status if status >= 400 else 500, headers={"X-Job-Id": job.id})
    return _job_response(job, 202)


@router.post("/webhooks/{name}")
async def call_webhook(name: str, request: Request,
                       idempotency_key: str | None = Header(default=None)) -> Any:
    service = await service_for(request)
    try:
        hook = find_hook(service.config, name)
        check_content_type(request.headers.get("content-type"))
        raw = await _read_limited(request, hook.max_body_bytes or service.config.max_body_bytes)
        await asyncio.to_thread(service.authenticate, name, hook, request.headers, raw)  # SQLite: replay check
        body = parse_body(raw)
        key = check_idempotency_key(idempotency_key)
        job, _ = await service.submit(name, hook, body, raw, key)
    except WebhookError as exc:
        return _failed(exc)
    if hook.mode == "async":
        return _job_response(job, 202)
    return _answer(await service.wait(job.id, hook.sync_timeout_s))


@router.get("/jobs/{job_id}", response_model=Job)
async def get_job(job_id: str, request: Request) -> Any:
    service = await service_for(request)
    state = get_state(request)
    job = await asyncio.to_thread(service.jobs.get, job_id)
    auth = request.headers.get("authorization") or ""
    is_owner = auth.lower().startswith("bearer ") and secrets.compare_digest(
        auth[7:].strip().encode(), state.owner_token.encode())
    # Unknown and unreadable jobs look the same, so ids cannot be probed.
    if job is None or not (is_owner or service.may_read(job, request.headers)):  # no I/O
        return error_response(404, f"no job '{job_id[:64]}' visible with these credentials (send the owner "
                                   f"token, the hook's bearer token, or the job id signed with the hook's "
                                   f"secret)", "job_not_found")
    return _job_response(job)
