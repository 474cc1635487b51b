"""Where each part of the answer's prompt goes, so that consecutive turns of one
conversation share their prefix (issue 17).

vLLM (prefix caching) and llama.cpp reuse the KV cache of the longest prompt prefix
they have already seen; everything after the first differing token is computed again.
So the prompt is laid out from the most stable part to the least stable one:

    system prompt(s) -> conversation history -> what changes every turn -> the question
                                                (recalled memory, step results)

Turn n+1 then starts with exactly turn n's system prompt and history, and only the last
exchange, the new notes and the new question are read again. Recalled memory used to
go first (before the system prompt), which changed the very first tokens every turn
and made every turn re-read the whole conversation.

The recalled notes stay a message of their own (a system message with the memory
header, core_agent/orchestration/memory_client.CONTEXT_HEADER), placed right before the last user message:
the question it was recalled for. In a tool-call loop the last user message is the
question the tools work on, so the notes sit in the same place on every request of
the loop and the loop's prefix is reused too. Chat templates must accept a system
message after the first turn (ChatML/Qwen3 and Llama 3 do; a template that insists on
strict user/assistant alternation would refuse it).

The stored history a prompt carries is a window whose start moves in steps
(`history_window`), not one turn at a time, for the same reason.

`recall_position: first` (configs/schema.py MemoryConfig) keeps the old layout only so
bench/bench_prefix_cache.py can measure the difference in one run.
"""

from __future__ import annotations

from typing import Literal, Sequence, TypeVar

from configs.contracts.tasks import ChatMessage

RecallPosition = Literal["before_question", "first"]
T = TypeVar("T")


def last_user_index(messages: Sequence[ChatMessage]) -> int:
    """Index of the last user message (len(messages) when there is none)."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "user":
            return i
    return len(messages)


def with_recalled(messages: list[ChatMessage], recalled: Sequence[ChatMessage],
                  position: RecallPosition = "before_question") -> list[ChatMessage]:
    """The prompt with the recalled memory messages in their place (see the module doc)."""
    if not recalled:
        return messages
    if position == "first":
        return list(recalled) + messages
    at = last_user_index(messages)
    return messages[:at] + list(recalled) + messages[at:]


def history_window(messages: Sequence[T], keep: int) -> list[T]:
    """The stored history a prompt carries: at least the newest `keep` messages, with a
    start that moves in steps of keep // 2 messages instead of one turn at a time.

    A window of exactly the newest `keep` messages drops the oldest exchange every turn
    once a conversation is longer than that, so every turn's prompt starts differently
    and the prefix cache reuses nothing but the system prompt. Here the start stays put
    for keep // 4 turns; the prompt holds between `keep` and keep + keep // 2 - 1
    messages. Never fewer than `keep`: memory recall leaves out the newest `keep`
    messages because the prompt holds them (memory_client.retrieve_context)."""
    if keep <= 0:
        return []
    if len(messages) <= keep:
        return list(messages)
    step = max(keep // 2, 1)
    start = (len(messages) - keep) // step * step
    return list(messages[start:])
