"""The `vision` queue: images -> text (OCR offline, or a vision-language model)."""

from __future__ import annotations

import time
from typing import Any

from workers.backends.registry import vision_backend
from workers.events import EventPublisher
from configs.contracts.images import decode_data_url
from configs.contracts.tasks import StepTask, TaskResult
from workers.published_task import published_task
from workers.runtime import settings


@published_task("vision.step")
def step(payload: dict[str, Any], publisher: EventPublisher) -> TaskResult:
    task = StepTask.model_validate(payload)
    config = settings().vision
    backend = vision_backend(settings())
    started = time.perf_counter()
    texts = []
    for attachment in task.attachments:
        image = decode_data_url(attachment.data_url, config.max_image_bytes, config.max_pixels)
        texts.append(f"[{attachment.name}]\n{backend.describe(image, task.instruction)}")
    text = "\n\n".join(texts) if texts else "(no image was attached to this request)"
    return TaskResult(text=text, model=backend.name, seconds=time.perf_counter() - started,
                      attempt=publisher.attempt, data={"images": len(task.attachments)})
