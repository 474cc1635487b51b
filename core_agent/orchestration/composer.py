"""Turn a plan's step results into the prompt for the final answer."""

from __future__ import annotations

from core_agent.orchestration.plan_runner import StepOutcome
from core_agent.orchestration.plans import Plan
from configs.contracts.tasks import ChatMessage

MAX_RESULT_CHARS = 3000
COMPOSER_PROMPT = ("Steps of a plan were run for the owner's request; their results follow the request. "
                   "Write the final answer for the owner from these results. If a step failed, say "
                   "plainly which step failed and why.")


def results_block(plan: Plan, outcomes: dict[str, StepOutcome]) -> str:
    parts = []
    for step in plan.steps:
        outcome = outcomes.get(step.id)
        if outcome is None or outcome.state != "succeeded" or outcome.result is None:
            reason = outcome.error if outcome else "not run"
            state = outcome.state.upper() if outcome else "NOT RUN"
            parts.append(f"[step {step.id} · {step.worker} · {state}: {reason}]")
        else:
            parts.append(f"[step {step.id} · {step.worker}]\n{outcome.result.text[:MAX_RESULT_CHARS]}")
    return "\n\n".join(parts)


def answer_messages(prompt: list[ChatMessage], question: str, plan: Plan,
                    outcomes: dict[str, StepOutcome]) -> list[ChatMessage]:
    """The conversation so far, with the last user turn replaced by request + step results.

    The composer's instruction goes after the history, next to the results it is about:
    the prompt then starts with the same system prompt and history as a direct answer's,
    so a planned turn and the turns around it share their prefix (prompt_layout.py)."""
    history = prompt[:-1] if prompt and prompt[-1].role == "user" else prompt
    return (history + [ChatMessage(role="system", content=COMPOSER_PROMPT),
                       ChatMessage(role="user", content=f"{question}\n\nStep results:\n{results_block(plan, outcomes)}")])


def failure_summary(outcomes: dict[str, StepOutcome]) -> str | None:
    failed = [f"{o.step.id} ({o.step.worker}): {o.error}" for o in outcomes.values() if o.state == "failed"]
    return "; ".join(failed) if failed else None
