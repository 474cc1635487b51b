"""Rule templates: the plan for a request's kind when the model's plan cannot be used.

A plan the owner asked for (`mode: "plan"`, or a route the router chose) should run
even when the core model writes a plan the validator refuses twice (a tiny model
writes dangling `depends_on` ids, cycles, a vision step with no image). Then the
request's kind, read by the rules below, picks a fixed plan:

- images attached -> read them (vision), then answer with what was read;
- asks to search notes / documents / memory -> a rag step;
- asks for code -> a code step (independent of the rag step, so both run in parallel);
- neither -> one chat step that drafts the answer.

The composer then writes the final answer from the steps' results, as for any plan.
Steps for workers the request may not use are left out. The patterns are English and
Russian, like the router's (configs/routes.yaml); they are code, not config, because
each one is tied to the step it adds.
"""

from __future__ import annotations

import re

from core_agent.orchestration.plans import Plan, PlanStep, image_plan

# Instructions are limited to 4000 characters (PlanStep); the question is cut well below.
MAX_QUESTION_CHARS = 3000

SEARCH_WORDS = re.compile(
    r"\b(notes?|documents?|docs|files?|memory|remember|search|find|look up|past conversations?|"
    r"заметк\w*|документ\w*|найди|поищи|вспомни|памят\w*)\b", re.IGNORECASE)
CODE_WORDS = re.compile(
    r"\b(code|python|script|function|program|snippet|regex|sql|код\w*|скрипт\w*|функци\w*|программ\w*)\b",
    re.IGNORECASE)


def template_plan(question: str, has_images: bool, allowed_workers: set[str] | None) -> Plan:
    """The rule template for this request's kind, using only workers it may use."""
    q = question[:MAX_QUESTION_CHARS]
    if has_images:
        return image_plan(q)

    def allowed(worker: str) -> bool:
        return allowed_workers is None or worker in allowed_workers

    steps: list[PlanStep] = []
    if SEARCH_WORDS.search(q) and allowed("rag"):
        steps.append(PlanStep(id="search", worker="rag", instruction=q))
    if CODE_WORDS.search(q) and allowed("code"):
        steps.append(PlanStep(id="code", worker="code", instruction=f"Write the Python code this request asks for: {q}"))
    if not steps:
        steps.append(PlanStep(id="draft", worker="chat", instruction=f"Draft an answer to the owner's request: {q}"))
    return Plan(steps=steps)
