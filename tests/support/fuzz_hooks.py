"""Schemathesis hooks for tests/test_api_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

Generated requests that would start a generation are kept cheap, so the fuzz stays
within its time budget on 2 cores: whatever else the fuzzer chose, a chat or Responses
body asks for at most 2 tokens, answers directly (no planner round-trips) and leaves
the memory alone. Everything else about the body (types, messages, extra fields,
streaming) stays as generated.
"""

from __future__ import annotations

from typing import Any

import schemathesis

CHEAP = {
    "/v1/chat/completions": {"max_tokens": 2, "max_completion_tokens": None, "mode": "direct",
                             "memory": "off", "plan": None},
    "/v1/responses": {"max_output_tokens": 2, "mode": "direct", "memory": "off"},
}


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    overrides = CHEAP.get(context.operation.path)
    if overrides is None or not isinstance(body, dict):
        return body
    body = {**body, **{k: v for k, v in overrides.items() if v is not None}}
    for key, value in overrides.items():
        if value is None:
            body.pop(key, None)
    return body
