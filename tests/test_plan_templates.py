"""The rule templates the planner falls back to (plan_templates.py): the request's kind
picks the steps, only allowed workers are used, and every template passes the same
validator as any other plan. No stack needed: pure functions over the shipped config."""

from __future__ import annotations

import pytest

from configs.loader import load_settings
from core_agent.orchestration.plan_templates import template_plan
from core_agent.orchestration.plans import validate_plan


def workers(question: str, has_images: bool = False, allowed: set[str] | None = None) -> list[tuple[str, str]]:
    plan = validate_plan(template_plan(question, has_images, allowed), load_settings().planner, allowed)
    return [(step.worker, ",".join(step.depends_on)) for step in plan.steps]


@pytest.mark.parametrize("question, expected", [
    # Independent gathering steps (parallel), the composer writes the answer from them.
    ("Find my notes about the garden, then write Python code that lists the plants.",
     [("rag", ""), ("code", "")]),
    ("Search my documents for the budget.", [("rag", "")]),
    ("Write a function that reverses a string.", [("code", "")]),
    ("Найди заметки о саде и напиши скрипт.", [("rag", ""), ("code", "")]),
    # Nothing to gather: one chat step drafts, so a plan still runs on a queue.
    ("What is 2 + 2?", [("chat", "")]),
])
def test_the_request_kind_picks_the_steps(question: str, expected: list[tuple[str, str]]) -> None:
    assert workers(question) == expected


def test_images_are_read_first_then_answered() -> None:
    assert workers("What does the sign say?", has_images=True) == [("vision", ""), ("chat", "read")]


def test_only_workers_the_request_may_use() -> None:
    # A webhook allowed only chat gets the chat draft, never a rag or code step.
    assert workers("Find my notes and write code.", allowed={"chat"}) == [("chat", "")]
    assert workers("Find my notes and write code.", allowed={"chat", "rag"}) == [("rag", "")]


def test_a_long_question_still_makes_a_valid_plan() -> None:
    # Instructions are limited to 4000 characters; the template cuts the question.
    assert workers("code " * 2000) == [("code", "")]
