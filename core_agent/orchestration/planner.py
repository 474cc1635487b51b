"""Write the plan for a request: given by the request, a rule template, or the core model.

The model is asked on the chat queue with the plan's JSON schema as response_format
(vLLM json_schema / llama.cpp grammar), thinking off, and a budget large enough for
a whole plan. Whatever comes back is validated. A plan the validator refuses gets ONE
repair round: the model sees its plan and the validator's message and writes it
again. If that is refused too (or the model cannot be reached), the rule template for
the request's kind runs (plan_templates.py); answering directly is the last resort.
Which of these happened is the plan's `origin` (model | repaired | template | direct,
or caller for a plan the request brought), recorded in the task record and sent as
the X-Appliance-Plan header (docs/api.md). Why earlier attempts were refused is kept
in `refused`, in order.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Literal

from configs.schema import Settings
from core_agent.orchestration.dispatcher import DispatchError, Dispatcher
from core_agent.orchestration.plan_templates import template_plan
from core_agent.orchestration.plans import PLAN_JSON_SCHEMA, InvalidPlan, Plan, parse_plan, turn_call_id, validate_plan
from configs.contracts.tasks import ChatMessage, ChatTask, GenerationParams

log = logging.getLogger("appliance.planner")

PlanOrigin = Literal["caller", "model", "repaired", "template", "direct"]

REPAIR_PROMPT = ("That plan was refused: {reason}. Write the whole plan again as JSON, fixing this. Every id "
                 "in depends_on must be the id of another step in the same plan, and no step may depend on "
                 "itself or on a step that depends on it.")


@dataclass
class PlanDecision:
    """The plan to run (None: answer directly), where it came from, and what was refused on the way."""

    plan: Plan | None
    origin: PlanOrigin
    refused: list[str] = field(default_factory=list)

    def record(self) -> dict:
        """The plan as the task record keeps it."""
        steps = self.plan.model_dump()["steps"] if self.plan is not None else []
        record: dict = {"steps": steps, "origin": self.origin, "refused": self.refused}
        if self.plan is None:
            record["fallback"] = "; ".join(self.refused) or "no plan"
        return record


PLANNER_PROMPT = """You plan work for a team of workers. Workers:
- chat: answers, explains, summarises, writes text.
- code: writes Python code (and may run it).
- rag: searches the owner's documents and past conversations.
- embed: turns text into vectors.
- vision: reads text in attached images.
Split the request into 1 to {max_steps} steps. Steps that do not need each other's results
have empty depends_on so they run in parallel; a step that needs another step's result lists
that step's id in depends_on. Reply with JSON only.
Example: {{"steps": [{{"id": "s1", "worker": "rag", "instruction": "Find notes about the budget", "depends_on": []}},
{{"id": "s2", "worker": "code", "instruction": "Write a function that sums a list", "depends_on": []}},
{{"id": "s3", "worker": "chat", "instruction": "Summarise the notes and the code", "depends_on": ["s1", "s2"]}}]}}"""


class Planner:
    def __init__(self, settings: Settings, dispatcher: Dispatcher) -> None:
        self.settings = settings
        self.dispatcher = dispatcher

    async def plan(self, question: str, task_id: str, explicit: Plan | None, has_images: bool,
                   allowed_workers: set[str] | None) -> PlanDecision:
        """The plan to run and its origin; never raises for a bad plan (it falls back)."""
        refused: list[str] = []
        if explicit is not None:
            # Checked when the request came in (400 otherwise); checked again, never trusted.
            return self._validated(explicit, "caller", refused, allowed_workers)
        if not has_images:
            decision = await self._model_plan(question, task_id, refused, self._model_workers(allowed_workers))
            if decision is not None:
                return decision
        decision = self._validated(template_plan(question, has_images, allowed_workers), "template", refused, allowed_workers)
        if decision.plan is None:
            log.warning("task %s: no usable plan, answering directly: %s", task_id, "; ".join(refused))
        elif refused:
            log.info("task %s: rule template after refused model plans: %s", task_id, "; ".join(refused))
        return decision

    @staticmethod
    def _model_workers(allowed_workers: set[str] | None) -> set[str]:
        """Workers a model-written plan may use: a vision step needs images, which this request has none of."""
        kinds = {"chat", "code", "embed", "rag"}
        return kinds if allowed_workers is None else kinds & allowed_workers

    def _validated(self, plan: Plan, origin: PlanOrigin, refused: list[str],
                   allowed_workers: set[str] | None) -> PlanDecision:
        try:
            return PlanDecision(validate_plan(plan, self.settings.planner, allowed_workers), origin, refused)
        except InvalidPlan as exc:
            refused.append(f"{origin} plan: {exc}")
            return PlanDecision(None, "direct", refused)

    async def _model_plan(self, question: str, task_id: str, refused: list[str],
                          workers: set[str]) -> PlanDecision | None:
        """The model's plan, or its repaired plan; None (with the reasons in `refused`) if neither runs."""
        limits = self.settings.planner
        messages = [ChatMessage(role="system", content=PLANNER_PROMPT.format(max_steps=limits.max_steps)),
                    ChatMessage(role="user", content=question)]
        for origin, celery_id in (("model", turn_call_id(task_id, "plan")),
                                  ("repaired", turn_call_id(task_id, "plan-repair"))):
            try:
                raw = await self._ask_model(messages, celery_id)
            except DispatchError as exc:
                refused.append(f"{origin} plan: the model could not be asked: {exc.info.message}")
                return None  # a repair round cannot help when the model is unreachable
            try:
                plan = validate_plan(self._parse(raw), limits, workers)
            except InvalidPlan as exc:
                refused.append(f"{origin} plan: {exc}")
                log.info("task %s: %s plan refused: %s", task_id, origin, exc)
                messages = messages + [ChatMessage(role="assistant", content=raw or "(nothing)"),
                                       ChatMessage(role="user", content=REPAIR_PROMPT.format(reason=exc))]
                continue
            log.info("task %s: %s plan with %d step(s)", task_id, origin, len(plan.steps))
            return PlanDecision(plan, origin, refused)  # type: ignore[arg-type]
        return None

    async def _ask_model(self, messages: list[ChatMessage], celery_id: str) -> str:
        limits = self.settings.planner
        task = ChatTask(
            model=limits.model, stream=False, messages=messages,
            params=GenerationParams(
                max_tokens=limits.plan_max_tokens, temperature=0.0, thinking=False, seed=0,
                response_format={"type": "json_schema",
                                 "json_schema": {"name": "plan", "schema": PLAN_JSON_SCHEMA}}),
        )
        result = await self.dispatcher.call("chat.generate", task.model_dump(), queue="chat", task_id=celery_id)
        return result.text

    def _parse(self, raw: str) -> Plan:
        if not raw.strip():
            raise InvalidPlan("the model returned an empty plan")
        try:
            json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidPlan(f"the model's plan is not JSON ({exc}); it may have run out of tokens "
                              f"(planner.plan_max_tokens={self.settings.planner.plan_max_tokens})") from exc
        return parse_plan(raw)
