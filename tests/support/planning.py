"""Helpers for the planner and router tests: what the model really wrote (read from the
worker's own event stream in Redis) and the plan rules checked by hand. An extra API with
other settings: tests/support/api_server.py."""

from __future__ import annotations

import json

import redis

from configs.contracts.tasks import stream_key


def model_text(redis_url: str, celery_id: str) -> str | None:
    """What the chat worker answered for one model call, read from that task's own event
    stream in Redis (written by the worker, not by the planner or router); None if it
    never ran."""
    client = redis.Redis.from_url(redis_url)
    try:
        for _entry, fields in client.xrange(stream_key(celery_id)):
            event = json.loads(fields[b"e"])
            if event["type"] == "done":
                return event["result"]["text"]
    finally:
        client.close()
    return None


def rules_broken(raw: str, max_steps: int, max_depth: int) -> list[str]:
    """The plan rules of docs/api.md, checked by hand on the model's raw text (an
    independent reference for the planner's validator): what makes the plan unrunnable
    for a request without images."""
    try:
        steps = json.loads(raw)["steps"]
    except (ValueError, KeyError, TypeError):
        return ["not a JSON object with steps"]
    if not steps:
        return ["no steps"]
    ids = [step.get("id") for step in steps]
    broken = [f"{len(steps)} steps > {max_steps}"] if len(steps) > max_steps else []
    if len(set(ids)) != len(ids):
        broken.append("duplicate ids")
    for step in steps:
        for dep in step.get("depends_on", []):
            if dep == step["id"]:
                broken.append(f"{step['id']} depends on itself")
            elif dep not in ids:
                broken.append(f"{step['id']} depends on missing {dep}")
        if step.get("worker") == "vision":
            broken.append("a vision step without an image")
    waiting = {step["id"]: set(step.get("depends_on", [])) for step in steps}
    done: set[str] = set()
    depth = 0
    while waiting:  # peel layer by layer: what cannot be peeled is a cycle
        layer = {sid for sid, deps in waiting.items() if deps <= done}
        if not layer:
            broken.append("a cycle")
            break
        done |= layer
        waiting = {sid: deps for sid, deps in waiting.items() if sid not in layer}
        depth += 1
    if depth > max_depth:
        broken.append(f"{depth} deep > {max_depth}")
    return broken
