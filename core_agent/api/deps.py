"""Shared state of the API process and the dependencies routes ask for."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import redis.asyncio as aioredis
from celery import Celery
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from configs.schema import Settings
from core_agent.orchestration.chat_service import ChatService
from core_agent.stores.conversations import ConversationStore
from core_agent.orchestration.dispatcher import Dispatcher
from core_agent.orchestration.memory_client import MemoryClient
from core_agent.stores.task_store import TaskStore


@dataclass
class AppState:
    settings: Settings
    owner_token: str
    store: ConversationStore
    celery: Celery
    redis: aioredis.Redis
    dispatcher: Dispatcher
    tasks: TaskStore
    memory: MemoryClient
    chat: ChatService


def get_state(request: Request) -> AppState:
    return request.app.state.appliance


_bearer = HTTPBearer(auto_error=False)


def require_owner(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
) -> None:
    state = get_state(request)
    if credentials is None or not secrets.compare_digest(
        credentials.credentials.encode(), state.owner_token.encode()
    ):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=("missing or wrong API token. Send 'Authorization: Bearer <token>'; the owner "
                    f"token is in {state.settings.token_file} (or APPLIANCE_API_KEY)."),
            headers={"WWW-Authenticate": "Bearer"},
        )
