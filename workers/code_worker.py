"""The `code` queue: write code with the code model, and run it in the sandbox if allowed.

Execution needs two permissions: the owner enabled the sandbox (sandbox.enabled),
and the request allows it (requests from webhooks never do unless their hook says so).
"""

from __future__ import annotations

import re
import time
from typing import Any

from configs.contracts.errors import BackendError
from workers.chat_worker import run_chat
from workers.events import EventPublisher
from configs.contracts.tasks import ChatTask, StepTask, TaskResult
from workers.published_task import published_task
from workers.runtime import settings
from workers.sandbox import SandboxRefused, SandboxResult, run_python
from configs.contracts.sandbox import SANDBOX_EXECUTE, SandboxRun
from workers.step_prompts import step_messages


class SandboxDisabled(BackendError):
    code = "sandbox_disabled"
    status = 403

    def __init__(self) -> None:
        super().__init__("code execution is disabled. Fix: set sandbox.enabled: true in configs/routes.yaml "
                         "(APPLIANCE_SANDBOX__ENABLED=true) if you want generated code to run.")


CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


def extract_code(text: str) -> str:
    """The first fenced code block, or the whole text when the model wrote bare code."""
    match = CODE_BLOCK.search(text)
    return (match.group(1) if match else text).strip()


def execution_report(result: SandboxResult) -> str:
    lines = [f"exit code {result.exit_code} after {result.seconds:.2f}s"]
    if result.limits_hit:
        lines.append("limits hit: " + ", ".join(result.limits_hit))
    if result.stdout:
        lines.append("stdout:\n" + result.stdout)
    if result.stderr:
        lines.append("stderr:\n" + result.stderr[-2000:])
    return "\n".join(lines)


@published_task("code.step")
def step(payload: dict[str, Any], publisher: EventPublisher) -> TaskResult:
    task = StepTask.model_validate(payload)
    route = settings().routes["code"]
    model = task.model or route.model or settings().default_model
    messages = step_messages(task, role="an expert Python programmer; write the code in one ```python block")
    written = run_chat(ChatTask(model=model, messages=messages, params=task.params, stream=False), publisher)
    code = extract_code(written.text)
    data: dict[str, Any] = {"code": code, "executed": False}
    text = f"```python\n{code}\n```"
    if task.allow_code_execution and settings().sandbox.enabled:
        try:
            run = run_python(code, settings().sandbox)
            data.update(executed=True, sandbox=run.model_dump(), limits_hit=run.limits_hit)
            text += "\n\nExecution: " + execution_report(run)
        except SandboxRefused as exc:
            data["refused"] = str(exc)
            text += f"\n\nNot executed: {exc}"
    elif task.allow_code_execution:
        data["refused"] = "code execution is disabled (sandbox.enabled: false in configs/routes.yaml)"
    return written.model_copy(update={"text": text, "data": data})


@published_task(SANDBOX_EXECUTE, max_retries=0)
def execute(payload: dict[str, Any], publisher: EventPublisher) -> TaskResult:
    """Run given code in the sandbox (POST /sandbox/run; the core checks permission).
    The request's limits can only lower the configured ones."""
    if not settings().sandbox.enabled:
        raise SandboxDisabled()
    request = SandboxRun.model_validate(payload)
    started = time.perf_counter()
    run = run_python(request.code, request.limits.applied_to(settings().sandbox))
    return TaskResult(text=execution_report(run), model="sandbox", seconds=time.perf_counter() - started,
                      data={"sandbox": run.model_dump(), "limits_hit": run.limits_hit}, attempt=publisher.attempt)
