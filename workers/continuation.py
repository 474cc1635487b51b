"""A redelivered generation continues from the text the client already has.

When a worker is lost mid-answer, the task runs again (Celery's redelivery, or the
core queueing it again: docs/architecture.md "Liveness and recovery"). The new
attempt folds the task's stream up to its own `attempt` event with the rule the core
uses (configs/contracts/attempts.py): that is exactly the text the core forwarded.
The model is then asked to continue a final assistant message holding that text, so
the answer is the sent text plus a continuation: the client never sees text spliced
from two different generations, and what is stored equals what was streamed.

Regenerating with the same seed and skipping the duplicated prefix (the earlier
design) assumed determinism that vLLM does not give (batching changes numerics).
"""

from __future__ import annotations

from dataclasses import dataclass

from configs.contracts.attempts import AttemptFold
from configs.contracts.errors import BadGenerationRequest
from configs.contracts.tasks import ChatMessage, ChatTask, GenerationParams, StreamEvent
from workers.events import EventPublisher


@dataclass(frozen=True)
class SentSoFar:
    text: str = ""
    reasoning: str = ""
    tokens: int = 0


def sent_before(publisher: EventPublisher) -> SentSoFar:
    """What earlier attempts of this task streamed, as the core forwarded it."""
    if publisher.attempt <= 1:
        return SentSoFar()
    fold = AttemptFold()
    for entry_id, fields in publisher.client.xrange(publisher.key, "-", publisher.attempt_entry):
        if (entry_id.decode() if isinstance(entry_id, bytes) else entry_id) == publisher.attempt_entry:
            break
        fold.accept(StreamEvent.model_validate_json(fields[b"e"]))
    return SentSoFar(text=fold.text, reasoning=fold.reasoning, tokens=fold.tokens)


def continued(task: ChatTask, sent: SentSoFar) -> tuple[list[ChatMessage], GenerationParams]:
    """The messages and parameters that continue `sent.text` (unchanged when nothing
    was sent: the attempt simply generates)."""
    if not sent.text:
        # Nothing of the answer reached the client yet (at most some reasoning, which is
        # shown but never stored): generating afresh splices nothing into the answer.
        return task.messages, task.params
    params = task.params
    if params.response_format or (params.tools and params.tool_choice != "none"):
        raise BadGenerationRequest(
            f"the worker generating this answer was lost after {len(sent.text)} characters were sent, and an "
            "answer constrained by response_format or tools cannot be continued from the middle. "
            "Send the request again.")
    # The answer had begun, so any thinking was over: continue the answer only (a
    # reasoning parser would otherwise read the continuation as thinking).
    update: dict = {"continue_final_message": True, "thinking": False if params.thinking else params.thinking}
    if params.max_tokens:
        # The whole answer stays within the request's max_tokens (counted in model
        # deltas, about one per token, summed over the coalesced events).
        update["max_tokens"] = max(1, params.max_tokens - sent.tokens)
    return ([*task.messages, ChatMessage(role="assistant", content=sent.text)],
            params.model_copy(update=update))
