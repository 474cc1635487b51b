"""Schemathesis hooks for tests/test_api_fuzz_state.py (loaded through SCHEMATHESIS_HOOKS).

That run fuzzes the operations that change state, on a stack of its own. Two kinds of
help, neither of which removes an operation or a generated case:

- Real ids. Random path parameters only ever hit 404, so the test seeds real things
  first (conversations, a finished task, a document, a registered adapter, an ended
  training job) and writes their ids to the JSON file named by FUZZ_SEEDS_ENV. For a
  path parameter (or DELETE /documents' `source`) the fuzzer then draws either its own
  value or one of the real ids, so renames, deletes, loads and resumes reach the code
  behind the 404. POST /adapters draws, besides its own path (three times in four), the
  folder of a real adapter, so a registration can succeed (and a taken name be refused).
- A bounded cost. Sandbox code runs with a 3 s wall clock and 2 CPU seconds unless the
  case itself names those limits (then it gets them, and a 400 if above the maximum),
  and at most 200 characters of code; a training request that passes every check trains
  one step. Chat and Responses bodies keep the caps of tests/support/fuzz_hooks.py.
"""

from __future__ import annotations

import json
import os
from functools import cache
from typing import Any

import schemathesis
from hypothesis import strategies as st

import tests.support.fuzz_hooks  # noqa: F401  (registers the chat/Responses caps)

FUZZ_SEEDS_ENV = "APPLIANCE_FUZZ_SEEDS"
SANDBOX_DEFAULTS = {"wall_seconds": 3, "cpu_seconds": 2}
MAX_CODE_CHARS = 200
TRAIN_STEPS = 1


@cache
def seeds() -> dict[str, Any]:
    path = os.environ.get(FUZZ_SEEDS_ENV)
    return json.loads(open(path, encoding="utf-8").read()) if path else {}


def _real_or_generated(values: dict[str, Any]) -> st.SearchStrategy:
    """The generated values, or the same with one seeded parameter replaced by a real id."""
    if not isinstance(values, dict):  # no path parameters, or a negative case's odd shape
        return st.just(values)
    choices = [st.just(values)]
    for key in values:
        real = seeds().get(key) or []
        if real:
            choices.append(st.sampled_from(real).map(lambda v, key=key: {**values, key: v}))
    return st.one_of(*choices)


@schemathesis.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> st.SearchStrategy:
    return _real_or_generated(path_parameters)


@schemathesis.hook
def flatmap_query(context: Any, query: Any) -> st.SearchStrategy:
    if context.operation.method.upper() != "DELETE" or context.operation.path != "/documents" \
            or not isinstance(query, dict):
        return st.just(query)
    real = seeds().get("source") or []
    if not real:
        return st.just(query)
    return st.one_of(st.just(query), st.sampled_from(real).map(lambda v: {**query, "source": [v]}))


@schemathesis.hook
def flatmap_body(context: Any, body: Any) -> st.SearchStrategy:
    operation = context.operation
    if operation.method.upper() == "POST" and operation.path == "/adapters" and isinstance(body, dict):
        real = seeds().get("adapter_path")
        if real:  # one in four: each real registration costs seconds (copy, checksum, GGUF)
            return st.sampled_from([body, body, body, {**body, "path": real}])
    return st.just(body)


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    operation = context.operation
    if operation.method.upper() != "POST" or not isinstance(body, dict):
        return body
    if operation.path == "/sandbox/run":
        return _cheap_sandbox_run(body)
    if operation.path == "/adapters/train":
        steps = body.get("max_steps", 0)
        if not isinstance(steps, int) or isinstance(steps, bool) or steps >= 0:
            return {**body, "max_steps": TRAIN_STEPS}  # a negative count keeps its 400
    return body


def _cheap_sandbox_run(body: dict[str, Any]) -> dict[str, Any]:
    body = dict(body)
    if isinstance(body.get("code"), str):
        body["code"] = body["code"][:MAX_CODE_CHARS]
    limits = body.get("limits")
    if "limits" not in body:
        body["limits"] = dict(SANDBOX_DEFAULTS)
    elif isinstance(limits, dict):  # anything else (null, a list) keeps its 400
        body["limits"] = {**SANDBOX_DEFAULTS, **limits}
    return body
