"""Write the plan for a request: given by the request, a rule template, or the core model.

The model is asked on the chat queue with the plan's JSON schema as response_format
(vLLM json_schema / llama.cpp grammar), thinking off, and a budget large enough for
a whole plan. Whatever comes back is validated; a plan that fails validation is
reported as InvalidPlan, and the caller answers directly instead.
"""

from __future__ import annotations

import json
import logging

from configs.schema import Settings
from core_agent.orchestration.dispatcher import Dispatcher
from core_agent.orchestration.plans import PLAN_JSON_SCHEMA, InvalidPlan, Plan, image_plan, parse_plan, validate_plan
from configs.contracts.tasks import ChatMessage, ChatTask, GenerationParams

log = logging.getLogger("appliance.planner")

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
                   allowed_workers: set[str] | None) -> Plan:
        """A validated plan, or InvalidPlan saying why there is none."""
        limits = self.settings.planner
        if explicit is not None:
            plan = explicit
        elif has_images:
            plan = image_plan(question)
        else:
            plan = await self._ask_model(question, task_id)
        return validate_plan(plan, limits, allowed_workers)

    async def _ask_model(self, question: str, task_id: str) -> Plan:
        limits = self.settings.planner
        task = ChatTask(
            model=limits.model, stream=False,
            messages=[ChatMessage(role="system", content=PLANNER_PROMPT.format(max_steps=limits.max_steps)),
                      ChatMessage(role="user", content=question)],
            params=GenerationParams(
                max_tokens=limits.plan_max_tokens, temperature=0.0, thinking=False, seed=0,
                response_format={"type": "json_schema",
                                 "json_schema": {"name": "plan", "schema": PLAN_JSON_SCHEMA}}),
        )
        result = await self.dispatcher.call("chat.generate", task.model_dump(), queue="chat",
                                            task_id=f"{task_id}:plan")  # not a step id: STEP_ID has no ':'
        if not result.text.strip():
            raise InvalidPlan("the model returned an empty plan")
        try:
            json.loads(result.text)
        except json.JSONDecodeError as exc:
            raise InvalidPlan(f"the model's plan is not JSON ({exc}); it may have run out of tokens "
                              f"(planner.plan_max_tokens={limits.plan_max_tokens})") from exc
        plan = parse_plan(result.text)
        log.info("task %s: model planned %d step(s)", task_id, len(plan.steps))
        return plan
