"""/adapters: the LoRA adapter registry over HTTP (same operations as `appliance adapters`),
and /stats/adapters: loads, evictions, swap latency and requests per adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from core_agent.api.deps import get_state, require_owner
from core_agent.api.errors import error_response
from lora_manager.naming import NAME_RE
from lora_manager.registry import AdapterRecord
from lora_manager.service import AdapterService
from configs.contracts.errors import BackendError

# No prefix: the adapter metrics also live beside the other statistics under /stats.
router = APIRouter(dependencies=[Depends(require_owner)], tags=["adapters"])


class NewAdapter(BaseModel):
    # The pattern is documented for clients; check_name enforces it with a message saying the fix.
    name: str = Field(min_length=1, max_length=63, json_schema_extra={"pattern": NAME_RE.pattern})
    # A folder on the appliance machine holding adapter_config.json + adapter_model.safetensors.
    path: str = Field(min_length=1, max_length=4096)
    tasks: list[str] = Field(default_factory=lambda: ["chat"])
    pinned: bool = False
    description: str = Field(default="", max_length=500)
    model: str | None = None


class ModelChoice(BaseModel):
    model: str | None = None


def _service(request: Request) -> AdapterService:
    return AdapterService(get_state(request).settings)


def _error(exc: BackendError) -> JSONResponse:
    return error_response(exc.status, str(exc), exc.code)


@router.get("/adapters", response_model=list[AdapterRecord])
def list_adapters(request: Request, task: str | None = None, source: str | None = None) -> Any:
    """All adapters, or with `task` and `source` only those the policy lets that source use
    for that task kind (what the UI's adapter picker offers)."""
    records = _service(request).list()
    if task is None and source is None:
        return records
    gate = get_state(request).chat.adapters
    return [r for r in records if gate.refusal(r, task or "chat", source or "owner") is None]


@router.get("/stats/adapters")
@router.get("/adapters/stats")
def adapter_stats(request: Request) -> dict[str, Any]:
    return _service(request).stats()


@router.get("/adapters/{name}", response_model=AdapterRecord)
def get_adapter(name: str, request: Request) -> Any:
    try:
        return _service(request).get(name)
    except BackendError as exc:
        return _error(exc)


@router.post("/adapters", response_model=AdapterRecord, status_code=201)
def add_adapter(body: NewAdapter, request: Request) -> Any:
    try:
        return _service(request).add(body.name, Path(body.path), tasks=body.tasks, pinned=body.pinned,
                                     description=body.description, model=body.model)
    except BackendError as exc:
        return _error(exc)


@router.delete("/adapters/{name}", status_code=204, response_model=None)
def remove_adapter(name: str, request: Request) -> Any:
    try:
        _service(request).remove(name)
    except BackendError as exc:
        return _error(exc)
    return Response(status_code=204)


@router.post("/adapters/{name}/load")
def load_adapter(name: str, request: Request, body: ModelChoice | None = None) -> Any:
    try:
        return {"name": name, "result": _service(request).load(name, body.model if body else None)}
    except BackendError as exc:
        return _error(exc)


@router.post("/adapters/{name}/unload")
def unload_adapter(name: str, request: Request, body: ModelChoice | None = None) -> Any:
    try:
        return {"name": name, "result": _service(request).unload(name, body.model if body else None)}
    except BackendError as exc:
        return _error(exc)
