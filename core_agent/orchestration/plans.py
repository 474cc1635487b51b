"""Plans: the steps the core dispatches, their JSON schema, and the checks they must pass.

A plan comes from the core model (constrained by PLAN_JSON_SCHEMA), from a rule
template (images -> OCR then answer) or from the request itself (workflow tools may
send their own). All three go through `validate_plan`, which enforces the limits in
configs/routes.yaml and the graph rules (known ids, no cycles, bounded depth).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from configs.schema import PlannerConfig

WorkerKind = Literal["chat", "code", "embed", "vision", "rag"]
STEP_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def step_call_id(task_id: str, step_id: str) -> str:
    """The Celery id (and event stream) of a plan step."""
    return f"{task_id}.{step_id}"


def turn_call_id(task_id: str, call: str) -> str:
    """The Celery id of one of the turn's own model calls (route, plan, plan-repair,
    answer). ':' cannot occur in a step id (STEP_ID), so these never share an id and
    an event stream with a step a plan happens to name "answer" or "plan"."""
    return f"{task_id}:{call}"


class PlanStep(BaseModel):
    id: str = Field(min_length=1, max_length=32)
    worker: WorkerKind
    instruction: str = Field(min_length=1, max_length=4000)
    depends_on: list[str] = Field(default_factory=list)
    adapter: str | None = None
    profile: str | None = None


class Plan(BaseModel):
    steps: list[PlanStep] = Field(min_length=1)


class InvalidPlan(ValueError):
    """The plan cannot be run; the message says which rule it breaks."""


# What the model must produce. Kept small: tiny and quantized models follow a flat
# schema far more reliably than one with optional nested objects.
PLAN_JSON_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "steps": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "worker": {"type": "string", "enum": ["chat", "code", "embed", "vision", "rag"]},
                    "instruction": {"type": "string"},
                    "depends_on": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["id", "worker", "instruction", "depends_on"],
            },
        }
    },
    "required": ["steps"],
}


def parse_plan(raw: str) -> Plan:
    try:
        return Plan.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidPlan(f"plan is not valid: {exc.errors()[0]['msg']} at "
                          f"{'.'.join(str(p) for p in exc.errors()[0]['loc'])}") from exc


def _depths(plan: Plan) -> dict[str, int]:
    """Depth of each step (1 = no dependencies); raises InvalidPlan on a cycle."""
    by_id = {s.id: s for s in plan.steps}
    depth: dict[str, int] = {}
    visiting: set[str] = set()

    def visit(step_id: str) -> int:
        if step_id in depth:
            return depth[step_id]
        if step_id in visiting:
            raise InvalidPlan(f"steps depend on each other in a cycle (through '{step_id}')")
        visiting.add(step_id)
        deps = by_id[step_id].depends_on
        depth[step_id] = 1 + max((visit(d) for d in deps), default=0)
        visiting.discard(step_id)
        return depth[step_id]

    for step in plan.steps:
        visit(step.id)
    return depth


def validate_plan(plan: Plan, limits: PlannerConfig, allowed_workers: set[str] | None = None) -> Plan:
    """Return the plan if it is runnable within `limits`, else raise InvalidPlan."""
    if len(plan.steps) > limits.max_steps:
        raise InvalidPlan(f"plan has {len(plan.steps)} steps; planner.max_steps is {limits.max_steps}")
    ids = [s.id for s in plan.steps]
    if len(set(ids)) != len(ids):
        raise InvalidPlan("step ids must be unique")
    for step in plan.steps:
        if not STEP_ID.match(step.id):
            raise InvalidPlan(f"step id '{step.id}' must be 1-32 letters, digits, _ or -")
        unknown = [d for d in step.depends_on if d not in ids]
        if unknown:
            raise InvalidPlan(f"step '{step.id}' depends on unknown step(s) {unknown}")
        if step.id in step.depends_on:
            raise InvalidPlan(f"step '{step.id}' depends on itself")
        if allowed_workers is not None and step.worker not in allowed_workers:
            raise InvalidPlan(f"step '{step.id}' uses worker '{step.worker}', which this request may not use "
                              f"(allowed: {sorted(allowed_workers)})")
    deepest = max(_depths(plan).values())
    if deepest > limits.max_depth:
        raise InvalidPlan(f"plan is {deepest} steps deep; planner.max_depth is {limits.max_depth}")
    return plan


def image_plan(question: str) -> Plan:
    """The rule template for a request with images: read them, then answer with what was read."""
    return Plan(steps=[
        PlanStep(id="read", worker="vision", instruction="Read all text in the attached image(s)."),
        PlanStep(id="answer", worker="chat", depends_on=["read"],
                 instruction=f"Answer the owner's request using the text read from the image(s): {question}"),
    ])
