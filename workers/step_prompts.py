"""How a plan step is put to a model: its instruction plus the results it depends on."""

from __future__ import annotations

from configs.contracts.tasks import ChatMessage, StepTask

# Each input is cut to this many characters so one verbose step cannot crowd the
# context of the next one.
MAX_INPUT_CHARS = 4000


def inputs_block(task: StepTask) -> str:
    if not task.inputs:
        return ""
    parts = [f"[result of step {sid}]\n{text[:MAX_INPUT_CHARS]}" for sid, text in task.inputs.items()]
    return "\n\nInputs from earlier steps:\n" + "\n\n".join(parts)


def step_messages(task: StepTask, role: str) -> list[ChatMessage]:
    system = (f"You are {role} doing one step of a larger plan. Do exactly the step asked, "
              "using the inputs given. Answer with the result only.")
    return [ChatMessage(role="system", content=system),
            ChatMessage(role="user", content=task.instruction + inputs_block(task))]
