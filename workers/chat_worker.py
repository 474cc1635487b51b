"""The `chat` queue: run a chat model, streaming its tokens back to the core."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.signals import worker_process_init

from configs.contracts.errors import BackendError
from workers.backends.registry import chat_backend
from workers.continuation import continued, sent_before
from workers.events import EventPublisher
from configs.contracts.tasks import ChatTask, StepTask, TaskResult, ToolCall, Usage, value_result
from workers.published_task import published_task
from workers.runtime import models_to_preload, settings
from workers.step_prompts import step_messages

log = logging.getLogger("appliance.worker.chat")


@worker_process_init.connect
def _preload_models(**_: object) -> None:
    """Load the configured models when the child starts, not on the first request."""
    for name in models_to_preload():
        try:
            backend = chat_backend(settings(), name)
            backend.check()
            getattr(backend, "llama", None)  # llama.cpp loads the GGUF here
            log.info("preloaded model %s", name)
        except BackendError as exc:
            # Not fatal: the request will get the same message as a clear error.
            log.error("cannot preload model %s: %s", name, exc)


def run_chat(task: ChatTask, publisher: EventPublisher) -> TaskResult:
    """Generate the answer, publishing each piece as it arrives (when streaming)."""
    started = time.perf_counter()
    backend = chat_backend(settings(), task.model)
    # A redelivered attempt continues the text already streamed (workers/continuation.py).
    sent = sent_before(publisher) if task.stream else None
    messages, params = continued(task, sent) if sent else (task.messages, task.params)
    parts: list[str] = [sent.text] if sent and sent.text else []
    thoughts: list[str] = [sent.reasoning] if sent and sent.text and sent.reasoning else []
    finish, usage = "stop", Usage()
    tool_calls: list[ToolCall] = []
    logprobs: list[dict[str, Any]] | None = [] if task.params.logprobs else None
    for delta in backend.stream(messages, params):
        if delta.reasoning:
            thoughts.append(delta.reasoning)
            if task.stream:
                publisher.reasoning(delta.reasoning)
            else:
                publisher.progress()
        tool_calls.extend(delta.tool_calls)
        if logprobs is not None and delta.logprobs:
            logprobs.extend(delta.logprobs)
        if delta.text:
            parts.append(delta.text)
            if task.stream:
                publisher.token(delta.text)
            else:
                publisher.progress()
        if delta.finish_reason:
            finish = delta.finish_reason
        if delta.usage:
            usage = delta.usage
    return TaskResult(text="".join(parts), reasoning="".join(thoughts) or None, finish_reason=finish,
                      model=task.model, adapter=task.params.adapter, usage=usage, attempt=publisher.attempt,
                      seconds=time.perf_counter() - started, tool_calls=tool_calls, logprobs=logprobs)


@published_task("chat.generate")
def generate(payload: dict[str, Any], publisher: EventPublisher) -> TaskResult:
    return run_chat(ChatTask.model_validate(payload), publisher)


@published_task("chat.step")
def step(payload: dict[str, Any], publisher: EventPublisher) -> TaskResult:
    """A plan step for the general chat model."""
    task = StepTask.model_validate(payload)
    model = task.model or settings().routes["chat"].model or settings().default_model
    messages = step_messages(task, role="a careful assistant")
    return run_chat(ChatTask(model=model, messages=messages, params=task.params, stream=False), publisher)


@published_task("chat.check_models", max_retries=0)
def check_models(payload: dict[str, Any], publisher: EventPublisher) -> TaskResult:
    """Readiness probe: can this worker serve each configured model? name -> 'ok' or why not."""
    status: dict[str, str] = {}
    for name in settings().models:
        try:
            chat_backend(settings(), name).check()
            status[name] = "ok"
        except BackendError as exc:
            status[name] = str(exc)
    return value_result(status, model="check")


