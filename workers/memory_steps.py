"""Plan steps for the memory kinds: `embed.step` (vectors) and `rag.step` (search).

The plan runner treats every kind alike (a StepTask in, a TaskResult out); these
adapt the embed and rag workers' own tasks to that shape.
"""

from __future__ import annotations

import time
from typing import Any

from configs.contracts.memory import EmbedRequest, SearchRequest
from workers.embed_worker import embed_texts
from workers.events import EventPublisher
from configs.contracts.tasks import StepTask, TaskResult
from workers.published_task import published_task
from workers.rag_worker import service
from workers.step_prompts import inputs_block


@published_task("embed.step")
def embed_step(payload: dict[str, Any], publisher: EventPublisher) -> TaskResult:
    task = StepTask.model_validate(payload)
    started = time.perf_counter()
    texts = [task.instruction] + list(task.inputs.values())
    result = embed_texts(EmbedRequest(texts=texts))
    return TaskResult(
        text=f"embedded {len(result.vectors)} text(s) into {result.dimension}-dimensional vectors "
             f"with {result.model}",
        model=result.model, seconds=time.perf_counter() - started, attempt=publisher.attempt,
        data={"dimension": result.dimension, "vectors": result.vectors})


@published_task("rag.step")
def rag_step(payload: dict[str, Any], publisher: EventPublisher) -> TaskResult:
    task = StepTask.model_validate(payload)
    started = time.perf_counter()
    query = (task.instruction + inputs_block(task))[:8000]
    found = service().search(SearchRequest(query=query, k=5, scope=task.memory_scope))
    lines = [f"[{hit.source}] {hit.text}" for hit in found.hits]
    return TaskResult(text="\n\n".join(lines) or "(nothing relevant found in memory)", model="memory",
                      seconds=time.perf_counter() - started, attempt=publisher.attempt,
                      data={"sources": [hit.source for hit in found.hits]})
