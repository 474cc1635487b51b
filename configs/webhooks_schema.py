"""Schema of configs/webhooks.yaml: hooks that n8n-style tools call (POST /webhooks/{name}).

Kept apart from configs/schema.py (which holds one `webhooks:` field pointing here) so
the webhook settings can grow without touching the shared schema file.
Secrets usually come from the environment, e.g. APPLIANCE_WEBHOOKS__HOOKS__SUMMARIZE__SECRET.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

HOOK_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
CALLBACK_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]+|[A-Za-z0-9]([A-Za-z0-9.-]{0,252}))$")
WorkerName = Literal["chat", "code", "embed", "vision", "rag"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookHook(_Strict):
    """One hook: who may call it, what it asks the appliance, and how it answers."""

    enabled: bool = True
    description: str = ""
    # Authentication: HMAC-SHA256 with `secret` (timestamp + raw body), or a bearer
    # token. A hook with neither answers 503 until one is configured.
    secret: SecretStr | None = None
    bearer_token: SecretStr | None = None
    # sync: the answer comes back in the HTTP response (up to sync_timeout_s);
    # async: 202 + job id at once, the result is POSTed to the request's callback_url.
    mode: Literal["sync", "async"] = "sync"
    # The prompt: {{ path.to.field }} placeholders are filled from the JSON body
    # (strings as they are, anything else as JSON); {{ . }} is the whole body.
    prompt_template: str = Field(min_length=1)
    system_prompt: str | None = None
    model: str | None = None
    profile: str | None = None
    # How the core handles the request (issue 3): auto | direct | plan.
    task_mode: Literal["auto", "direct", "plan"] = "direct"
    allowed_workers: list[WorkerName] = Field(default_factory=lambda: ["chat"])
    # Adapters a request may pick with the body field "adapter"; `adapter` is the default.
    allowed_adapters: list[str] = Field(default_factory=list)
    adapter: str | None = None
    # What callers of this hook may read and use: a preset of configs/scopes.yaml
    # (None = scopes.webhook_default). Its turns go to the namespace "webhook:<name>".
    scope: str | None = None
    # Generated code is never run for webhook requests unless the hook says so.
    allow_code_execution: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    sync_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    max_body_bytes: int | None = Field(default=None, ge=16)

    @model_validator(mode="after")
    def _default_adapter_allowed(self) -> WebhookHook:
        if self.adapter is not None and self.adapter not in self.allowed_adapters:
            raise ValueError(f"adapter '{self.adapter}' must also be listed in allowed_adapters")
        return self


class WebhooksConfig(_Strict):
    enabled: bool = True
    # Signed requests older or newer than this are refused (clock skew + replay window).
    signature_window_s: int = Field(default=300, ge=10, le=3600)
    # Default body limit for every hook (a hook may lower or raise it).
    max_body_bytes: int = Field(default=256 * 1024, ge=16)
    # Async callbacks: attempts, first delay (doubles each time), per-attempt timeout.
    callback_attempts: int = Field(default=5, ge=1, le=20)
    callback_backoff_s: float = Field(default=2.0, ge=0)
    callback_timeout_s: float = Field(default=15.0, gt=0)
    # Jobs (and their idempotency keys) are kept this long, then purged.
    job_retention_s: int = Field(default=7 * 86400, ge=60)
    # Hosts async callbacks may go to (names or IP literals, no scheme or port). Empty:
    # any host whose every address is public (core_agent/webhooks/callback_guard.py).
    callback_hosts: list[str] = Field(default_factory=list)
    hooks: dict[str, WebhookHook] = Field(default_factory=dict)

    @field_validator("callback_hosts")
    @classmethod
    def _bare_hosts(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            if not CALLBACK_HOST_RE.match(host):
                raise ValueError(f"callback_hosts entry '{host}' must be a bare host name or IP address "
                                 f"(e.g. n8n, 192.168.1.20, ::1), without scheme, port or path")
        return [h.lower().strip("[]") for h in hosts]

    @field_validator("hooks")
    @classmethod
    def _hook_names(cls, hooks: dict[str, WebhookHook]) -> dict[str, WebhookHook]:
        for name in hooks:
            if not HOOK_NAME_RE.match(name):
                raise ValueError(f"hook name '{name}' must be lowercase letters, digits, _ or - "
                                 f"(it is part of the URL /webhooks/<name>)")
        return hooks
