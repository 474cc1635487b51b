"""The principal of a request (owner, API key or webhook) and the checks its scope implies.

Every route and the chat path ask the principal, never the raw token:
- `may_address(namespace)`: may it append to / continue a conversation stored there?
  (owner: any; others: only their own namespace). A refusal looks exactly like an
  unknown id (404), so ids of other principals' threads cannot be probed.
- `visible_namespaces()`: whose conversations it may read (listing, messages, tasks,
  recall): None = all, [] = none, else that list.
- `memory_filter()`: the same rule as a search filter the memory applies inside the
  store query (configs/contracts/memory.py MemoryScopeFilter).
- `require_*`: 403 ScopeDenied naming the missing scope and where to grant it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from configs.contracts.errors import ErrorInfo
from configs.contracts.memory import MemoryScopeFilter
from configs.schema import Settings
from configs.scopes_schema import ANY, OWNER, MemoryGrant, ScopePreset

PrincipalKind = Literal["owner", "key", "webhook"]

OWNER_PRESET = ScopePreset(description="the owner: everything", memory=MemoryGrant(threads="all", documents=[ANY]),
                           workers=[ANY], adapters=[ANY], profiles=[ANY], code=True)


class ScopeDenied(Exception):
    """403: the principal lacks a scope; the message names it and how to grant it."""

    def __init__(self, principal: Principal, scope: str, what: str) -> None:
        self.principal, self.scope = principal, scope
        if scope == OWNER:
            self.message = (f"{principal.label} may not {what}: that needs scope 'owner' (the owner token); "
                            f"keys and webhooks never have it")
        else:
            self.message = (f"{principal.label} may not {what}: its scope '{principal.scope_name}' lacks "
                            f"'{scope}'. Grant it in configs/scopes.yaml presets.{principal.scope_name}, or "
                            + ("give the hook another `scope` in configs/webhooks.yaml" if principal.kind == "webhook"
                               else "issue a key with another --scope"))
        super().__init__(self.message)

    def info(self) -> ErrorInfo:
        return ErrorInfo(code="scope_missing", status=403, message=self.message)


@dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    name: str
    scope_name: str = OWNER
    scope: ScopePreset = field(default_factory=lambda: OWNER_PRESET)

    @property
    def is_owner(self) -> bool:
        return self.kind == "owner"

    @property
    def id(self) -> str:
        """"owner", "key:<name>" or "webhook:<name>": also the request source the adapter policy matches."""
        return OWNER if self.is_owner else f"{self.kind}:{self.name}"

    @property
    def label(self) -> str:
        return "the owner" if self.is_owner else f"{'API key' if self.kind == 'key' else 'webhook'} '{self.name}'"

    @property
    def namespace(self) -> str:
        """Where this principal's conversations (and their memory) are stored."""
        if self.is_owner:
            return OWNER
        return self.scope.namespace or self.id

    # --- conversations and memory -------------------------------------------------

    def may_address(self, namespace: str) -> bool:
        return self.is_owner or namespace == self.namespace

    def visible_namespaces(self) -> list[str] | None:
        threads = self.scope.memory.threads
        if self.is_owner or threads == "all":
            return None
        return [self.namespace] if threads == "own" else []

    def may_read(self, namespace: str) -> bool:
        visible = self.visible_namespaces()
        return visible is None or namespace in visible

    def reads_memory(self) -> bool:
        return self.visible_namespaces() != [] or bool(self.scope.memory.documents)

    def memory_filter(self) -> MemoryScopeFilter | None:
        """None for "everything"; otherwise which turns and documents a search may return."""
        docs = self.scope.memory.documents
        namespaces = self.visible_namespaces()
        document_tags = None if ANY in docs else list(docs)
        if namespaces is None and document_tags is None:
            return None
        return MemoryScopeFilter(namespaces=namespaces, document_tags=document_tags)

    # --- what it may use --------------------------------------------------------------

    @staticmethod
    def _granted(values: list[str], wanted: str) -> bool:
        return ANY in values or wanted in values

    def require_worker(self, worker: str, what: str = "use it") -> None:
        if not self._granted(list(self.scope.workers), worker):
            raise ScopeDenied(self, f"workers: {worker}", f"use the {worker} worker ({what})")

    def allowed_workers(self) -> set[str] | None:
        return None if ANY in self.scope.workers else set(self.scope.workers)

    def require_profile(self, profile: str) -> None:
        if not self._granted(self.scope.profiles, profile):
            raise ScopeDenied(self, f"profiles: {profile}", f"use profile '{profile}'")

    def require_adapter(self, adapter: str) -> None:
        if not self._granted(self.scope.adapters, adapter):
            raise ScopeDenied(self, f"adapters: {adapter}", f"use adapter '{adapter}'")

    def may_use_adapter(self, adapter: str) -> bool:
        return self._granted(self.scope.adapters, adapter)

    def require_code(self) -> None:
        if not self.scope.code:
            raise ScopeDenied(self, "code: true", "run generated code")

    def require_owner(self, what: str) -> None:
        if not self.is_owner:
            raise ScopeDenied(self, OWNER, what)


OWNER_PRINCIPAL = Principal(kind="owner", name=OWNER)


class UnknownPreset(Exception):
    pass


def preset(settings: Settings, name: str) -> ScopePreset:
    found = settings.scopes.presets.get(name)
    if found is None:
        raise UnknownPreset(f"scope preset '{name}' is not configured (presets in configs/scopes.yaml: "
                            f"{sorted(settings.scopes.presets)})")
    return found


def key_principal(settings: Settings, name: str, scope_name: str) -> Principal:
    return Principal(kind="key", name=name, scope_name=scope_name, scope=preset(settings, scope_name))


def webhook_principal(settings: Settings, hook: str, scope_name: str | None) -> Principal:
    name = scope_name or settings.scopes.webhook_default
    return Principal(kind="webhook", name=hook, scope_name=name, scope=preset(settings, name))


def authorize_chat(principal: Principal, profile: str, adapter: str | None, code: bool,
                   allowed_workers: set[str] | None) -> set[str] | None:
    """Check a chat turn against the principal's scope (ScopeDenied names what is
    missing); return the workers its plan may use (the request's, narrowed by the scope)."""
    principal.require_worker("chat", "answer a chat turn")
    principal.require_profile(profile)
    if adapter:
        principal.require_adapter(adapter)
    if code:
        principal.require_code()
    scoped = principal.allowed_workers()
    if scoped is None:
        return allowed_workers
    return scoped if allowed_workers is None else allowed_workers & scoped
