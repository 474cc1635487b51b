"""Conversation routes: list, create, rename, delete, read messages.

Each principal sees only what its scope lets it read (core_agent/access/principal.py);
a conversation it may not see answers exactly like an unknown id (404)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from core_agent.access.principal import Principal
from core_agent.api.deps import get_state, require_principal
from core_agent.stores.conversations import Conversation, ConversationNotFound, ConversationStore, StoredMessage

router = APIRouter(prefix="/conversations", dependencies=[Depends(require_principal)], tags=["conversations"])


class NewConversation(BaseModel):
    title: str = Field(default="New conversation", max_length=200)


class Rename(BaseModel):
    title: str = Field(min_length=1, max_length=200)


def _not_found(cid: str) -> HTTPException:
    return HTTPException(404, f"conversation '{cid}' does not exist")


def _visible(store: ConversationStore, principal: Principal, cid: str, write: bool = False) -> None:
    """404 unless the conversation exists and the principal may read it (write: change it)."""
    namespace = store.namespace_of(cid)
    allowed = namespace is not None and (principal.may_address(namespace) if write else principal.may_read(namespace))
    if not allowed:
        raise _not_found(cid)


@router.get("", response_model=list[Conversation])
def list_conversations(request: Request, limit: int = Query(100, ge=1, le=1000),
                       offset: int = Query(0, ge=0), q: str | None = None,
                       principal: Principal = Depends(require_principal)) -> list[Conversation]:
    return get_state(request).store.list(limit=limit, offset=offset, query=q,
                                         namespaces=principal.visible_namespaces())


@router.post("", response_model=Conversation, status_code=201)
def create_conversation(body: NewConversation, request: Request,
                        principal: Principal = Depends(require_principal)) -> Conversation:
    return get_state(request).store.create(title=body.title, namespace=principal.namespace)


@router.get("/{cid}", response_model=Conversation)
def get_conversation(cid: str, request: Request, principal: Principal = Depends(require_principal)) -> Conversation:
    _visible(get_state(request).store, principal, cid)
    try:
        return get_state(request).store.get(cid)
    except ConversationNotFound:
        raise _not_found(cid) from None


@router.patch("/{cid}", response_model=Conversation)
def rename_conversation(cid: str, body: Rename, request: Request,
                        principal: Principal = Depends(require_principal)) -> Conversation:
    _visible(get_state(request).store, principal, cid, write=True)
    try:
        return get_state(request).store.rename(cid, body.title)
    except ConversationNotFound:
        raise _not_found(cid) from None


@router.delete("/{cid}", status_code=204)
def delete_conversation(cid: str, request: Request, principal: Principal = Depends(require_principal)) -> Response:
    _visible(get_state(request).store, principal, cid, write=True)
    try:
        get_state(request).store.delete(cid)
    except ConversationNotFound:
        raise _not_found(cid) from None
    return Response(status_code=204)


@router.get("/{cid}/messages", response_model=list[StoredMessage])
def conversation_messages(cid: str, request: Request,
                          principal: Principal = Depends(require_principal)) -> list[StoredMessage]:
    _visible(get_state(request).store, principal, cid)
    try:
        return get_state(request).store.messages(cid)
    except ConversationNotFound:
        raise _not_found(cid) from None
