"""Which events of a task's stream count: the one rule the core and the workers share.

A task may run more than once (a worker lost mid-task, a retry): every delivery is a
numbered attempt (workers/events.py). Both sides read the stream with this fold:

- an event of an attempt older than the newest attempt seen so far is stale (a
  superseded delivery that is still talking) and is ignored;
- the answer text so far is every accepted token, in stream order.

The core forwards exactly the accepted tokens to the client; a redelivered attempt
folds the stream up to its own `attempt` event and continues from that text. Both see
the same entries in the same order, so the text a new attempt continues from is the
text the client already has, and the final answer is that text plus the new tokens.
"""

from __future__ import annotations

from configs.contracts.tasks import StreamEvent


class AttemptFold:
    def __init__(self) -> None:
        self.latest = 0
        self.tokens = 0  # accepted model deltas of the answer (about one token each)
        self._text: list[str] = []
        self._reasoning: list[str] = []

    def accept(self, event: StreamEvent) -> bool:
        """Take in one event; False when it belongs to a superseded attempt."""
        if event.attempt < self.latest:
            return False
        self.latest = event.attempt
        if event.type == "token":
            self._text.append(event.text)
            self.tokens += event.pieces
        elif event.type == "reasoning":
            self._reasoning.append(event.text)
        return True

    @property
    def text(self) -> str:
        return "".join(self._text)

    @property
    def reasoning(self) -> str:
        return "".join(self._reasoning)
