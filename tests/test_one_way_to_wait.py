"""Every wait on a task goes through the dispatcher's event stream (issue 15).

- A webhook job run by one API process is awaited by another one through the job's
  event stream, and the waiter gets the finished job.
- A memory task that fails in the worker reaches the caller with the worker's own
  message and status.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from configs.contracts.memory import RAG_REMOVE_DOCUMENT
from core_agent.orchestration.chat_service import ChatService
from core_agent.orchestration.dispatcher import Dispatcher
from core_agent.orchestration.memory_client import MemoryClient, MemoryUnavailable
from core_agent.stores.conversations import ConversationStore
from core_agent.stores.task_store import TaskStore
from core_agent.webhooks.service import WebhookService
from tests.conftest import Stack
from workers.celery_app import create_celery_app


def test_a_webhook_job_is_awaited_from_another_api_process_through_its_stream(stack: Stack) -> None:
    settings = stack.settings

    async def scenario() -> tuple[str, str]:
        redis = aioredis.Redis.from_url(settings.redis_url)
        celery = create_celery_app(settings)
        store = ConversationStore(settings.conversations_db)
        dispatcher = Dispatcher(settings, celery, redis)
        chat = ChatService(settings, store, dispatcher, TaskStore(settings.tasks_db, redis))
        runner, waiter = WebhookService(settings, chat, store), WebhookService(settings, chat, store)
        job, _ = await asyncio.to_thread(runner.jobs.create, "elsewhere", "0" * 64, None, None)
        await asyncio.to_thread(runner.jobs.running, job.id, "t-elsewhere", "c-elsewhere")
        assert job.id not in waiter._tasks  # the waiter does not run the job itself

        async def finish_later() -> None:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(runner.jobs.succeeded, job.id, {"answer": "forty-two"})
            await runner._announce_end(job.id)

        finisher = asyncio.create_task(finish_later())
        seen = await waiter.wait(job.id, timeout_s=120)
        await finisher
        await redis.aclose()
        return seen.status, seen.answer or ""

    status, answer = asyncio.run(scenario())
    assert (status, answer) == ("succeeded", "forty-two")


def test_a_memory_task_failure_keeps_the_workers_message_and_status(stack: Stack) -> None:
    settings = stack.settings

    async def remove_nothing() -> MemoryUnavailable | object:
        redis = aioredis.Redis.from_url(settings.redis_url)
        client = MemoryClient(settings, ConversationStore(settings.conversations_db),
                              create_celery_app(settings), redis)
        try:
            # The payload breaks the task's contract: the worker refuses it and says why.
            return await client.call(RAG_REMOVE_DOCUMENT, {"sources": []}, timeout_s=120)
        except MemoryUnavailable as exc:
            return exc
        finally:
            await client.stop()
            await redis.aclose()

    outcome = asyncio.run(remove_nothing())
    assert isinstance(outcome, MemoryUnavailable), outcome
    assert outcome.ran, "the worker ran the task and failed it"
    assert "sources" in outcome.info.message and outcome.info.code == "worker_error", outcome.info
