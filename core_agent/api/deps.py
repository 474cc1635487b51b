"""Shared state of the API process and the dependencies routes ask for."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from celery import Celery
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from configs.schema import Settings
from core_agent.access.principal import OWNER_PRINCIPAL, Principal, UnknownPreset, key_principal
from core_agent.stores.api_keys import ApiKeyStore, key_store_path
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


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status_code=status.HTTP_401_UNAUTHORIZED, detail=message,
                         headers={"WWW-Authenticate": "Bearer"})


def api_keys(state: AppState) -> ApiKeyStore:
    """The key store, opened once per process; read on every request, so keys created or
    revoked by `appliance keys` apply without a restart."""
    store = getattr(state, "_api_keys", None)
    if store is None:
        store = ApiKeyStore(key_store_path(state.settings.data_dir))
        setattr(state, "_api_keys", store)
    return store


def is_owner_token(state: AppState, token: str | None) -> bool:
    return token is not None and secrets.compare_digest(token.encode(), state.owner_token.encode())


def principal_for_token(state: AppState, token: str | None) -> Principal:
    """The owner, or the named API key this bearer token is; 401 for anything else."""
    if is_owner_token(state, token):
        return OWNER_PRINCIPAL
    match = api_keys(state).find(token) if token else None
    if match is None:
        raise _unauthorized("missing or wrong API token. Send 'Authorization: Bearer <token>'; the owner "
                            f"token is in {state.settings.token_file} (or APPLIANCE_API_KEY); other clients "
                            f"use a key from `appliance keys create NAME`.")
    if match.status == "revoked":
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(match.info.revoked_at or 0))
        raise _unauthorized(f"API key '{match.info.name}' was revoked ({when}); ask the owner for a new one "
                            f"(`appliance keys create`).")
    try:
        return key_principal(state.settings, match.info.name, match.info.scope)
    except UnknownPreset as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"API key '{match.info.name}': {exc}. The owner must "
                                                       f"restore the preset or issue a new key") from None


async def require_principal(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
) -> Principal:
    """Who asks: the owner or an API key (routes narrow what it sees by its scope).

    Async, so FastAPI runs it on the event loop rather than handing it to a thread: the
    owner's token is a comparison, and only an API key's lookup (SQLite) goes to a
    thread. A sync dependency cost every request a thread hop (issue 17, TTFT)."""
    state = get_state(request)
    token = credentials.credentials if credentials else None
    if is_owner_token(state, token):
        principal = OWNER_PRINCIPAL
    else:
        principal = await asyncio.to_thread(principal_for_token, state, token)
    request.state.principal = principal
    return principal


async def require_owner(principal: Principal = Depends(require_principal)) -> None:
    """Owner-only routes: a valid key gets 403 naming the missing scope, not 401."""
    principal.require_owner("use this owner-only endpoint")
