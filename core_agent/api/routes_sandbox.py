"""POST /sandbox/run: run Python in the code worker's sandbox, as a tool for workflows.

The API process never runs the code: it puts a `code.execute` task on the `code`
queue (the same sandbox the code worker uses for plan steps, workers/sandbox.py) and
answers with what the run produced. A request may lower the sandbox's limits, never
raise them (400 naming the limit). Who may call it is decided in one place,
`authorize_code_run`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from configs.contracts.sandbox import SANDBOX_EXECUTE, SandboxOutcome, SandboxRun
from core_agent.access.principal import Principal
from core_agent.api.deps import get_state, require_principal
from core_agent.api.errors import error_response
from core_agent.orchestration.dispatcher import DispatchError


def authorize_code_run(principal: Principal = Depends(require_principal)) -> None:
    """Who may run code: the owner, or a key/webhook whose scope says `code: true`
    (403 naming the scope otherwise)."""
    principal.require_code()


router = APIRouter(tags=["sandbox"], dependencies=[Depends(authorize_code_run)])


@router.post("/sandbox/run", response_model=SandboxOutcome)
async def run_code(body: SandboxRun, request: Request) -> Any:
    state = get_state(request)
    over = body.limits.above(state.settings.sandbox)
    if over:
        return error_response(400, "limits above the configured maximum (sandbox.* in configs/routes.yaml): "
                                   + "; ".join(over) + ". Ask for less, or raise the maximum.", "limit_too_high")
    try:
        result = await state.dispatcher.call(SANDBOX_EXECUTE, body.model_dump(), queue="code")
    except DispatchError as exc:  # also TaskFailed: sandbox disabled (403) or unavailable (503)
        return error_response(exc.info.status, exc.info.message, exc.info.code)
    run = result.data["sandbox"]
    return SandboxOutcome(stdout=run["stdout"], stderr=run["stderr"], exit_code=run["exit_code"],
                          timed_out=run["timed_out"], limits_hit=result.data["limits_hit"])
