"""No silent ignoring: OpenAI request fields we do not honour are refused by name.

Every field of the request models is honoured (see docs/api.md for the table); a field
that is not one of them reaches `model_extra` and is refused here with a 400 that names
it and says what to do, instead of being dropped while the client believes it worked.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import PydanticCustomError

# Why a known OpenAI field is refused (the rest get the generic reason).
_REASONS = {
    "audio": "audio output is not available",
    "modalities": "only text output is available",
    "prediction": "predicted outputs are not implemented",
    "reasoning_effort": "use the appliance's `profile` field (fast | think | ...) instead",
    "reasoning": "use the appliance's `profile` field (fast | think | ...) instead",
    "service_tier": "there is one service tier",
    "store": "stored completions are not kept; conversations are stored by the appliance itself",
    "web_search_options": "web search is not available",
    "background": "background responses are not implemented; use /tasks with a webhook",
    "include": "no extra output fields are available",
    "truncation": "the appliance trims history itself (profiles' context_cap)",
    "conversation": "use previous_response_id or the appliance's conversation_id",
    "prompt": "stored prompt templates are not available",
    "max_tool_calls": "not implemented; limit calls with parallel_tool_calls",
    "top_logprobs": "not available on this route",
}


def refuse_unsupported(extra: dict[str, Any] | None, route: str) -> None:
    """Raise a validation error naming the first unsupported field in `extra`."""
    # A field set to nothing (null, false, "", [], {}) asks for nothing: accepted, since
    # SDKs fill some in with empty defaults.
    asked = {k: v for k, v in (extra or {}).items() if v not in (None, False, "", [], {})}
    if not asked:
        return
    name = sorted(asked)[0]
    reason = _REASONS.get(name, "this appliance does not implement it")
    raise PydanticCustomError(
        "unsupported_parameter",
        "parameter '{name}' is not supported on {route} ({reason}); remove it from the request",
        {"name": name, "route": route, "reason": reason},
    )
