"""Run a plan's steps on their queues: parallel where independent, in order where not.

Our own small DAG runner on asyncio (not a Celery canvas): the API process already
follows each task's event stream, a canvas cannot pass a step's result into the
*instruction* of the next step without a callback task per edge, and this way the
runner can enforce the per-step timeout, the wall-time limit, the loop guard and
cancellation itself, and record every state change for /tasks/{id}/events.
See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field

from configs.schema import Settings
from configs.telemetry import tracer
from core_agent.access.principal import Principal, ScopeDenied
from core_agent.orchestration.dispatcher import DispatchError, Dispatcher
from core_agent.orchestration.plans import Plan, PlanStep, step_call_id
from core_agent.stores.task_store import TaskStore, summarize
from lora_manager.errors import AdapterError
from lora_manager.policy import AdapterGate
from configs.contracts.memory import MemoryScopeFilter
from configs.contracts.tasks import Attachment, GenerationParams, StepTask, TaskResult

log = logging.getLogger("appliance.plan_runner")


@dataclass
class StepContext:
    """What every step of one request shares."""

    attachments: list[Attachment] = field(default_factory=list)
    allow_code_execution: bool = False
    profile: str | None = None
    adapter: str | None = None   # the request's explicit adapter, if any
    source: str = "owner"        # who asked: "owner" or "webhook:<name>" (adapter policy)
    memory_scope: MemoryScopeFilter | None = None  # what memory steps may read (None: everything)
    principal: Principal | None = None  # whose scope the steps' profiles and adapters must be in


@dataclass
class StepOutcome:
    step: PlanStep
    state: str                    # succeeded | failed | skipped | cancelled
    result: TaskResult | None = None
    error: str | None = None


class PlanRunner:
    def __init__(self, settings: Settings, dispatcher: Dispatcher, tasks: TaskStore, adapters: AdapterGate) -> None:
        self.settings = settings
        self.dispatcher = dispatcher
        self.tasks = tasks
        self.adapters = adapters

    def _params(self, step: PlanStep, ctx: StepContext) -> GenerationParams:
        """Generation settings for a step; its adapter passes the policy for this step's kind
        and the request's source (AdapterError otherwise)."""
        route = self.settings.routes[step.worker]
        name = step.profile or ctx.profile or route.profile or self.settings.default_profile
        profile = self.settings.profiles.get(name) or self.settings.profiles[self.settings.default_profile]
        adapter = None
        who = ctx.principal
        if who is not None and (step.profile or ctx.profile):
            who.require_profile(name)  # ScopeDenied: the step fails, naming the scope
        if step.worker in ("chat", "code"):  # only model-backed kinds take adapters
            named = step.adapter or ctx.adapter
            if who is not None and named:
                who.require_adapter(named)
            adapter = self.adapters.resolve(named, step.worker, ctx.source, name).adapter
            if who is not None and adapter and not who.may_use_adapter(adapter):
                adapter = None  # picked by a rule, not granted by the scope: the base model
        return GenerationParams(max_tokens=profile.max_tokens, temperature=profile.temperature,
                                thinking=profile.thinking, adapter=adapter)

    async def run(self, task_id: str, plan: Plan, ctx: StepContext) -> dict[str, StepOutcome]:
        limits = self.settings.planner
        outcomes: dict[str, StepOutcome] = {}
        running: dict[asyncio.Task, PlanStep] = {}
        seen: dict[str, str] = {}   # loop guard: input fingerprint -> step that had it
        deadline = time.monotonic() + limits.max_wall_s
        waiting = list(plan.steps)
        try:
            while waiting or running:
                for step in [s for s in waiting if all(d in outcomes for d in s.depends_on)]:
                    waiting.remove(step)
                    failed = [d for d in step.depends_on if outcomes[d].state != "succeeded"]
                    if failed:
                        await self._settle(task_id, outcomes, StepOutcome(
                            step, "skipped", error=f"not run: step(s) {failed} did not succeed"))
                        continue
                    inputs = {d: outcomes[d].result.text for d in step.depends_on}  # type: ignore[union-attr]
                    key = hashlib.sha256(json.dumps([step.worker, step.adapter, step.profile, step.instruction,
                                                     inputs]).encode()).hexdigest()
                    if key in seen:
                        await self._settle(task_id, outcomes, StepOutcome(
                            step, "skipped", error=f"loop guard: same worker and input as step '{seen[key]}'"))
                        continue
                    seen[key] = step.id
                    running[asyncio.create_task(self._run_step(task_id, step, inputs, ctx))] = step
                if not running:
                    continue
                remaining = deadline - time.monotonic()
                done, _ = await asyncio.wait(running, timeout=max(remaining, 0),
                                             return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    await self._abandon(task_id, running, outcomes, waiting,
                                        f"planner.max_wall_s ({limits.max_wall_s:g}s) exceeded", "failed")
                    break
                for finished in done:
                    running.pop(finished)
                    await self._settle(task_id, outcomes, finished.result())
        except asyncio.CancelledError:
            await self._abandon(task_id, running, outcomes, waiting, "cancelled by the owner", "cancelled")
            raise
        return outcomes

    async def _settle(self, task_id: str, outcomes: dict[str, StepOutcome], outcome: StepOutcome) -> None:
        outcomes[outcome.step.id] = outcome
        if outcome.state in ("skipped", "cancelled"):
            await self.tasks.update_step(task_id, outcome.step.id, state=outcome.state, error=outcome.error)

    async def _abandon(self, task_id: str, running: dict[asyncio.Task, PlanStep],
                       outcomes: dict[str, StepOutcome], waiting: list[PlanStep], reason: str, state: str) -> None:
        """Stop what runs (revoking its Celery tasks) and mark everything unfinished."""
        for task, step in running.items():
            task.cancel()
            await self.dispatcher.revoke(self._celery_id(task_id, step))
        await asyncio.gather(*running, return_exceptions=True)
        for step in running.values():
            outcomes[step.id] = StepOutcome(step, state, error=reason)
            await self.tasks.update_step(task_id, step.id, state=state, error=reason, finished_at=time.time())
        for step in waiting:
            await self._settle(task_id, outcomes, StepOutcome(step, "cancelled", error=reason))

    @staticmethod
    def _celery_id(task_id: str, step: PlanStep) -> str:
        return step_call_id(task_id, step.id)

    async def _run_step(self, task_id: str, step: PlanStep, inputs: dict[str, str], ctx: StepContext) -> StepOutcome:
        with tracer().start_as_current_span(f"step {step.id}", attributes={"appliance.step": step.id,
                                                                          "appliance.step_worker": step.worker}):
            return await self._dispatch_step(task_id, step, inputs, ctx)

    async def _dispatch_step(self, task_id: str, step: PlanStep, inputs: dict[str, str],
                             ctx: StepContext) -> StepOutcome:
        route = self.settings.routes[step.worker]
        model = route.model if step.worker in ("chat", "code") else None
        try:
            params = self._params(step, ctx)
        except (AdapterError, ScopeDenied) as exc:
            await self.tasks.update_step(task_id, step.id, state="failed", error=str(exc), finished_at=time.time())
            await asyncio.to_thread(self.tasks.log_route, task_id, step.id, step.worker, model, step.adapter,
                                    0, 0, 0.0, "refused")
            return StepOutcome(step, "failed", error=str(exc))
        payload = StepTask(task_id=task_id, step_id=step.id, instruction=step.instruction, inputs=inputs,
                           model=model, params=params,
                           attachments=ctx.attachments if step.worker == "vision" else [],
                           allow_code_execution=ctx.allow_code_execution, memory_scope=ctx.memory_scope)
        started = time.time()
        await self.tasks.update_step(task_id, step.id, state="running", queued_at=started, model=model,
                                     adapter=params.adapter)
        timeout = self.settings.planner.step_timeout_s
        try:
            result = await asyncio.wait_for(
                self.dispatcher.call(f"{step.worker}.step", payload.model_dump(), queue=route.queue,
                                     task_id=self._celery_id(task_id, step)), timeout)
        except (DispatchError, asyncio.TimeoutError) as exc:
            if isinstance(exc, asyncio.TimeoutError):
                await self.dispatcher.revoke(self._celery_id(task_id, step))
                error = f"timed out after {timeout:g}s (planner.step_timeout_s)"
            else:
                error = exc.info.message
            seconds = time.time() - started
            await self.tasks.update_step(task_id, step.id, state="failed", error=error,
                                         finished_at=time.time(), seconds=seconds)
            await asyncio.to_thread(self.tasks.log_route, task_id, step.id, step.worker, model, params.adapter,
                                    0, 0, seconds, "failed")
            log.warning("task %s step %s failed: %s", task_id, step.id, error)
            return StepOutcome(step, "failed", error=error)
        seconds = time.time() - started
        await self.tasks.update_step(
            task_id, step.id, state="succeeded", started_at=result.started_at, finished_at=result.finished_at,
            worker_process=result.worker, seconds=seconds, model=result.model,
            prompt_tokens=result.usage.prompt_tokens, completion_tokens=result.usage.completion_tokens,
            attempts=result.attempt, result_summary=summarize(result.text))
        await asyncio.to_thread(self.tasks.log_route, task_id, step.id, step.worker, result.model, result.adapter,
                                result.usage.prompt_tokens, result.usage.completion_tokens, seconds, "succeeded")
        return StepOutcome(step, "succeeded", result=result)
