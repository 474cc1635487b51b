"""Schema of configs/scopes.yaml: what an API key or a webhook may do (docs/security.md).

Every request has a principal: the owner (the owner token), a named API key
(`appliance keys create NAME --scope PRESET`) or a webhook (configs/webhooks.yaml).
The owner may do everything. Keys and webhooks get a named preset from this file:

- memory.threads: which conversations it may read (list, history, recall):
  `none`, `own` (its own namespace only) or `all` (the owner's too).
- memory.documents: document tags it may recall ("*" = every document, [] = none).
  Tags come from a document's front matter (`tags: [public]`).
- namespace: where its conversations and turns are stored (default: its own,
  "key:<name>" / "webhook:<name>"); never the owner's.
- workers, adapters, profiles: what it may use ("*" = all); code: may generated code run.

Kept apart from configs/schema.py (which holds one `scopes:` field pointing here).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ANY = "*"
OWNER = "owner"
PRESET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
NAMESPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
ThreadAccess = Literal["none", "own", "all"]
WorkerGrant = Literal["chat", "code", "embed", "vision", "rag", "*"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MemoryGrant(_Strict):
    """Which memory a principal may read."""

    threads: ThreadAccess = "own"
    documents: list[str] = Field(default_factory=list)


class ScopePreset(_Strict):
    """One named set of permissions for keys and webhooks."""

    description: str = ""
    memory: MemoryGrant = Field(default_factory=MemoryGrant)
    # Where its conversations are stored; None = the principal's own ("key:<name>").
    namespace: str | None = None
    workers: list[WorkerGrant] = Field(default_factory=lambda: ["chat"])
    adapters: list[str] = Field(default_factory=list)
    profiles: list[str] = Field(default_factory=lambda: [ANY])
    code: bool = False

    @field_validator("namespace")
    @classmethod
    def _not_the_owners(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value == OWNER:
            raise ValueError("namespace 'owner' holds the owner's conversations; a key or webhook may never "
                             "store its turns there (leave namespace unset for its own)")
        if not NAMESPACE_RE.match(value):
            raise ValueError("namespace must be 1-128 letters, digits and _.:- (starting with a letter or digit)")
        return value


def _default_presets() -> dict[str, ScopePreset]:
    return {
        "chat": ScopePreset(description="an OpenAI client (Open WebUI, n8n's OpenAI credential): chat only, "
                                        "its own threads, no documents, no adapters, no code"),
        "webhook": ScopePreset(description="webhooks: their own threads only; the hook's allowed_workers, "
                                           "allowed_adapters and allow_code_execution narrow it further",
                               workers=[ANY], adapters=[ANY], code=True),
    }


class ScopesConfig(_Strict):
    # The preset a key gets when `appliance keys create` is given no --scope.
    key_default: str = "chat"
    # The preset of a webhook whose hook names no `scope`.
    webhook_default: str = "webhook"
    presets: dict[str, ScopePreset] = Field(default_factory=_default_presets)

    @field_validator("presets")
    @classmethod
    def _names(cls, presets: dict[str, ScopePreset]) -> dict[str, ScopePreset]:
        for name in presets:
            if name == OWNER:
                raise ValueError("'owner' is the owner's built-in scope (everything) and cannot be redefined")
            if not PRESET_NAME_RE.match(name):
                raise ValueError(f"preset name '{name}' must be lowercase letters, digits, _ or -")
        return presets

    @model_validator(mode="after")
    def _defaults_exist(self) -> ScopesConfig:
        for key in ("key_default", "webhook_default"):
            if getattr(self, key) not in self.presets:
                raise ValueError(f"{key} '{getattr(self, key)}' is not one of presets: {sorted(self.presets)}")
        return self


def check_references(scopes: ScopesConfig, profiles: set[str], hook_scopes: dict[str, str | None]) -> None:
    """Names that point into other sections must exist (called by Settings' validator)."""
    for name, preset in scopes.presets.items():
        unknown = [p for p in preset.profiles if p != ANY and p not in profiles]
        if unknown:
            raise ValueError(f"scopes.presets.{name}.profiles names {unknown}, which are not profiles: "
                             f"{sorted(profiles)}")
    for hook, scope in hook_scopes.items():
        if scope is not None and scope not in scopes.presets:
            raise ValueError(f"webhooks.hooks.{hook}.scope '{scope}' is not one of scopes.presets: "
                             f"{sorted(scopes.presets)}")
