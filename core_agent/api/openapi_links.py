"""OpenAPI links: which response field names the resource that other operations take.

A client (or a fuzzer's stateful phase) can follow them: the conversation POST
/conversations creates is the `cid` of its GET, PATCH and DELETE; the adapter POST
/adapters registers is the `name` of its load, unload and DELETE; a chat's task is the
`task_id` of the task routes (from the X-Task-Id header); a training job's id is the
`job_id` of its status, cancel and resume.
"""

from __future__ import annotations

from typing import Any

# (method, path, status) of the creating operation -> (its value, [(method, path, param)])
LINKS: dict[tuple[str, str, str], tuple[str, list[tuple[str, str, str]]]] = {
    ("post", "/conversations", "201"): ("$response.body#/id", [
        ("get", "/conversations/{cid}", "cid"), ("patch", "/conversations/{cid}", "cid"),
        ("get", "/conversations/{cid}/messages", "cid"), ("delete", "/conversations/{cid}", "cid"),
        ("delete", "/memory/conversations/{cid}", "cid")]),
    ("post", "/adapters", "201"): ("$response.body#/name", [
        ("get", "/adapters/{name}", "name"), ("post", "/adapters/{name}/load", "name"),
        ("post", "/adapters/{name}/unload", "name"), ("delete", "/adapters/{name}", "name")]),
    ("post", "/adapters/train", "202"): ("$response.body#/job", [
        ("get", "/adapters/train/{job_id}", "job_id"), ("delete", "/adapters/train/{job_id}", "job_id"),
        ("post", "/adapters/train/{job_id}/resume", "job_id")]),
    ("post", "/v1/chat/completions", "200"): ("$response.header.X-Task-Id", [
        ("get", "/tasks/{task_id}", "task_id"), ("get", "/tasks/{task_id}/events", "task_id"),
        ("delete", "/tasks/{task_id}", "task_id")]),
}


def add_links(schema: dict[str, Any]) -> dict[str, Any]:
    paths = schema.get("paths", {})
    for (method, path, status), (value, targets) in LINKS.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        links = response.setdefault("links", {})
        for target_method, target_path, parameter in targets:
            operation_id = paths.get(target_path, {}).get(target_method, {}).get("operationId")
            if operation_id:
                links[operation_id] = {"operationId": operation_id, "parameters": {parameter: value}}
    return schema
