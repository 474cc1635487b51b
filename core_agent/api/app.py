"""The FastAPI application: wires settings, store, queues and routers together.

Run it with `uvicorn core_agent.api.app:create_app --factory` (the launcher does).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI

from configs.loader import get_settings
from configs.private_files import protect_data_dir
from configs.redis_connect import async_client
from configs.schema import Settings
from configs.telemetry import setup_tracing
from core_agent.api import routes_conversations, routes_health, routes_openai, routes_tasks
from core_agent.api import routes_embeddings, routes_memory
from core_agent.api import routes_webhooks
from core_agent.api import routes_adapters
from core_agent.api import routes_metrics
from core_agent.api import routes_sandbox
from core_agent.api import routes_responses
from core_agent.api import routes_training
from core_agent.api.body_limit import BodySizeLimit
from core_agent.api.text_guard import RejectInvalidText
from core_agent.api.openapi_errors import install_error_schema
from core_agent.api.deps import AppState
from core_agent.api.errors import install_error_handlers
from core_agent.observability.metrics import HttpMetrics
from core_agent.orchestration.chat_service import ChatService
from core_agent.stores.conversations import ConversationStore
from core_agent.orchestration.dispatcher import Dispatcher
from core_agent.orchestration.memory_client import MemoryClient
from core_agent.orchestration.task_recovery import TaskRecovery
from core_agent.stores.task_store import TaskStore
from core_agent.stores.owner_token import ensure_owner_token
from workers.celery_app import create_celery_app

log = logging.getLogger("appliance.api")


def build_state(settings: Settings) -> AppState:
    protect_data_dir(settings.data_dir)  # before any store creates a file (docs/security.md)
    store = ConversationStore(settings.conversations_db)
    celery = create_celery_app(settings, follows_streams=True)  # survives Redis restarts
    redis = async_client(settings.redis_url)  # health-checked, retried (configs/redis_connect.py)
    dispatcher = Dispatcher(settings, celery, redis)
    tasks = TaskStore(settings.tasks_db, redis)
    memory = MemoryClient(settings, store, celery, redis)
    return AppState(settings=settings, owner_token=ensure_owner_token(settings), store=store,
                    celery=celery, redis=redis, dispatcher=dispatcher, tasks=tasks, memory=memory,
                    chat=ChatService(settings, store, dispatcher, tasks, memory))


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    setup_tracing(settings, "api")
    state = build_state(settings)

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        log.info("API ready on %s (profile %s, data %s)", settings.api_url, settings.profile, settings.data_dir)
        state.memory.ensure_drainer()  # index turns stored while the API was down
        await TaskRecovery(state.chat).start()  # tasks a killed API process left running
        routes_webhooks.resume_jobs(api)  # ...and the webhook jobs that ran them
        yield
        await state.memory.stop()
        await state.redis.aclose()

    app = FastAPI(title="Appliance API", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible multi-agent appliance API")
    app.state.appliance = state
    install_error_handlers(app)
    install_error_schema(app)  # the OpenAPI schema lists the error statuses really sent
    app.add_middleware(RejectInvalidText)  # inside the body limit: reads bounded bodies only
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(HttpMetrics)  # outermost: counts refusals of the body limit too
    app.include_router(routes_health.router)
    app.include_router(routes_openai.router)
    app.include_router(routes_conversations.router)
    app.include_router(routes_tasks.router)
    app.include_router(routes_memory.router)
    app.include_router(routes_embeddings.router)
    app.include_router(routes_webhooks.router)
    app.include_router(routes_training.router)  # before routes_adapters: /adapters/train is not an adapter
    app.include_router(routes_adapters.router)
    app.include_router(routes_metrics.router)
    app.include_router(routes_sandbox.router)
    app.include_router(routes_responses.router)
    return app
