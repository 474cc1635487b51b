"""Webhooks for n8n-style tools: check a request, turn it into a chat turn, answer or call back.

A request to POST /webhooks/{name} is checked in this order, each failure a clear 4xx:
hook known (404) and usable (503), content type (415), size (413), authentication
(401: HMAC signature within the window, or the hook's bearer token), replay (409),
JSON object body (400), request fields (400), idempotency key (422 when reused for
another body). Then a job row is written (webhook_jobs.JobStore) and the hook's prompt
template, filled from the body, runs as one ChatTurn through the app's ChatService
with the hook's limits (source "webhook:<name>", profile, mode, allowed workers and
adapters, no code execution unless allowed) and as the hook's principal: its scope
(configs/scopes.yaml) decides which memory the turn may recall, and its conversations
live in the namespace "webhook:<name>" — a conversation_id of anybody else's thread
is refused like an unknown one (404), never joined.

sync hooks answer in the response (or 202 + job when the answer takes longer than
sync_timeout_s); async hooks answer 202 at once and POST the finished job to the
request's callback_url, signed like incoming requests, retrying with backoff. Callback
URLs are checked against SSRF at submit time and at each delivery (callback_guard.py).

A finished job is announced on its own event stream (the dispatcher's, id
`webhook-job:<id>`), so a request waiting on a job run by another request or process
waits the same way the core waits on any task. Every SQLite call runs in a thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import httpx

from configs.schema import Settings
from configs.webhooks_schema import WebhookHook, WebhooksConfig
from core_agent.access.principal import Principal, UnknownPreset, webhook_principal
from core_agent.orchestration.chat_service import ChatFailed, ChatService, ChatTurn
from core_agent.stores.conversations import ConversationStore
from configs.processes import process_alive
from core_agent.stores.webhook_jobs import Job, JobStore
from core_agent.webhooks.signing import SignatureError, signed_headers, verify
from core_agent.webhooks.callback_guard import (
    CallbackRefused,
    CallbackUnresolvable,
    PinnedTransport,
    check_callback,
)
from configs.contracts.tasks import ChatMessage, GenerationParams, StreamEvent, TaskResult
from core_agent.orchestration.dispatcher import DispatchError
from core_agent.webhooks.recovery import interrupted, recovered_outcome

log = logging.getLogger("appliance.webhooks")

PLACEHOLDER_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")
RESERVED_FIELDS = ("callback_url", "conversation_id", "adapter")


def job_stream_id(job_id: str) -> str:
    """The id of the event stream that announces the end of a webhook job."""
    return f"webhook-job:{job_id}"


class WebhookError(Exception):
    """A request the hook refuses: HTTP status, machine code and a message naming the fix."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


# --- prompt templates ----------------------------------------------------------

def _lookup(body: Any, path: str) -> Any:
    value = body
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise WebhookError(400, f"the hook's prompt needs the field '{path}' in the JSON body, "
                                    f"but it is missing", "missing_field")
    return value


def render_prompt(template: str, body: dict[str, Any]) -> str:
    """Fill {{ path.to.field }} from the body; {{ . }} is the whole body as JSON.
    Plain substitution only: no expressions, so a body cannot run anything."""
    def fill(match: re.Match[str]) -> str:
        path = match.group(1)
        value = body if path in (".", "") else _lookup(body, path)
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return PLACEHOLDER_RE.sub(fill, template).strip()


# --- request checks ------------------------------------------------------------

def _env_name(hook: str, key: str) -> str:
    return f"APPLIANCE_WEBHOOKS__HOOKS__{hook.upper()}__{key.upper()}"


def find_hook(config: WebhooksConfig, name: str) -> WebhookHook:
    hook = config.hooks.get(name)
    if hook is None or not config.enabled:
        raise WebhookError(404, f"there is no webhook named '{name}'. Hooks are declared in "
                                f"configs/webhooks.yaml under webhooks.hooks", "unknown_hook")
    if not hook.enabled:
        raise WebhookError(503, f"webhook '{name}' is disabled (enabled: false in configs/webhooks.yaml)",
                           "hook_disabled")
    if hook.secret is None and hook.bearer_token is None:
        raise WebhookError(503, f"webhook '{name}' has no secret and no bearer token yet, so nobody can call "
                                f"it. Set {_env_name(name, 'secret')} (HMAC) or {_env_name(name, 'bearer_token')} "
                                f"and restart the API", "hook_not_configured")
    if hook.mode == "async" and hook.secret is None:
        raise WebhookError(503, f"async webhook '{name}' needs a secret to sign its callbacks. "
                                f"Set {_env_name(name, 'secret')} and restart the API", "hook_not_configured")
    return hook


def check_content_type(content_type: str | None) -> None:
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise WebhookError(415, f"send the body as JSON with 'Content-Type: application/json' "
                                f"(got {media or 'no content type'!r})", "unsupported_media_type")


def too_large(limit: int) -> WebhookError:
    return WebhookError(413, f"the body is larger than this hook's limit of {limit} bytes "
                             f"(max_body_bytes in configs/webhooks.yaml)", "body_too_large")


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WebhookError(400, f"the body is not valid UTF-8 JSON: {exc}", "invalid_json") from None
    if not isinstance(body, dict):
        raise WebhookError(400, f"the body must be a JSON object ({{...}}), not {type(body).__name__}",
                           "invalid_json")
    return body


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not IDEMPOTENCY_KEY_RE.match(key):
        raise WebhookError(400, "Idempotency-Key must be 1-200 printable ASCII characters without spaces",
                           "invalid_idempotency_key")
    return key


@dataclass
class HookRequest:
    """What a checked body asks for."""

    prompt: str
    callback_url: str | None
    conversation_id: str | None
    adapter: str | None


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise WebhookError(400, f"'{key}' must be a non-empty string", "invalid_field")
    return value.strip()


def hook_request(name: str, hook: WebhookHook, body: dict[str, Any]) -> HookRequest:
    callback_url = _optional_str(body, "callback_url")
    if hook.mode == "async":
        if callback_url is None:
            raise WebhookError(400, f"webhook '{name}' is asynchronous: put the URL that should receive the "
                                    f"result in the body field 'callback_url' (or poll GET /jobs/<id>)",
                               "missing_callback_url")
        parsed = urlparse(callback_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise WebhookError(400, f"callback_url must be an http(s) URL, got {callback_url[:100]!r}",
                               "invalid_callback_url")
    elif callback_url is not None:
        raise WebhookError(400, f"webhook '{name}' answers synchronously and sends no callbacks; remove "
                                f"'callback_url' or make the hook async (mode: async)", "unexpected_callback_url")
    adapter = _optional_str(body, "adapter") or hook.adapter
    if adapter is not None and adapter not in hook.allowed_adapters:
        allowed = ", ".join(hook.allowed_adapters) or "none"
        raise WebhookError(400, f"adapter '{adapter}' is not allowed for webhook '{name}' (allowed: {allowed}; "
                                f"see allowed_adapters in configs/webhooks.yaml)", "adapter_not_allowed")
    prompt = render_prompt(hook.prompt_template, body)
    if not prompt:
        raise WebhookError(400, "the filled-in prompt is empty; send the fields the hook's template uses",
                           "empty_prompt")
    return HookRequest(prompt=prompt, callback_url=callback_url,
                       conversation_id=_optional_str(body, "conversation_id"), adapter=adapter)


# --- the service -----------------------------------------------------------------

def _turn_extras(name: str, hook: WebhookHook) -> dict[str, Any]:
    """ChatTurn fields of the multi-agent core, passed when this ChatTurn has them."""
    wanted = {"source": f"webhook:{name}", "profile": hook.profile, "mode": hook.task_mode,
              "allow_code_execution": hook.allow_code_execution, "allowed_workers": set(hook.allowed_workers)}
    have = {f.name for f in dataclasses.fields(ChatTurn)}
    return {k: v for k, v in wanted.items() if k in have}


def result_view(result: Any) -> dict[str, Any]:
    data = result.model_dump(mode="json") if hasattr(result, "model_dump") else {"text": str(result)}
    data["answer"] = data.pop("text", "")
    return data


JOBS_FILE = "webhooks.sqlite3"  # in the data dir


class WebhookService:
    """One per API process: runs jobs, delivers callbacks, answers job lookups."""

    def __init__(self, settings: Settings, chat: ChatService, conversations: ConversationStore) -> None:
        self.settings = settings
        self.config = settings.webhooks
        self.chat = chat
        self.conversations = conversations
        self.jobs = JobStore(settings.data_dir / JOBS_FILE)
        self._tasks: dict[str, asyncio.Task] = {}
        self._recover()

    def _recover(self) -> None:
        """Jobs of an API process that is gone: unfinished ones end as their chat turn was
        recovered (core_agent/webhooks/recovery.py), pending callbacks resumed."""
        self.jobs.purge(self.config.job_retention_s)
        unfinished, callbacks = self.jobs.orphans(process_alive)
        for job_id in unfinished:
            self.jobs.adopt(job_id)
            self._spawn(job_id, self._resume(job_id))
        for job_id in callbacks:
            job = self.jobs.get(job_id)
            if job and job.callback and job.callback.status == "pending":
                self.jobs.adopt(job_id)
                self._spawn(job_id, self._deliver(job.hook, job_id))

    def _spawn(self, job_id: str, coro: Any) -> asyncio.Task:
        # Created inside the API's event loop (first webhook request), so this never lacks one.
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))
        return task

    # --- authentication ---

    def authenticate(self, name: str, hook: WebhookHook, headers: Any, raw: bytes) -> None:
        """Accept the hook's bearer token, or a fresh HMAC signature never seen before."""
        auth = headers.get("authorization") or ""
        if auth.lower().startswith("bearer ") and hook.bearer_token is not None:
            if secrets.compare_digest(auth[7:].strip().encode(), hook.bearer_token.get_secret_value().encode()):
                return
            raise WebhookError(401, f"wrong bearer token for webhook '{name}'", "bad_token")
        if hook.secret is None:
            raise WebhookError(401, f"webhook '{name}' needs 'Authorization: Bearer <the hook's token>'",
                               "missing_token")
        try:
            sig = verify(hook.secret.get_secret_value(), headers.get("x-appliance-timestamp"),
                         headers.get("x-appliance-signature"), raw, self.config.signature_window_s)
        except SignatureError as exc:
            raise WebhookError(401, str(exc), "bad_signature") from None
        if not self.jobs.remember_signature(name, sig, self.config.signature_window_s):
            raise WebhookError(409, "this signed request was already received; replays are refused. Sign every "
                                    "request anew (fresh timestamp); use Idempotency-Key to retry safely",
                               "replayed")

    def may_read(self, job: Job, headers: Any) -> bool:
        """GET /jobs/{id} without the owner token: the hook's bearer token, or the job id signed."""
        hook = self.config.hooks.get(job.hook)
        if hook is None:
            return False
        auth = headers.get("authorization") or ""
        if auth.lower().startswith("bearer ") and hook.bearer_token is not None:
            return secrets.compare_digest(auth[7:].strip().encode(), hook.bearer_token.get_secret_value().encode())
        if hook.secret is None:
            return False
        try:
            verify(hook.secret.get_secret_value(), headers.get("x-appliance-timestamp"),
                   headers.get("x-appliance-signature"), job.id.encode(), self.config.signature_window_s)
        except SignatureError:
            return False
        return True

    # --- submitting ---

    async def submit(self, name: str, hook: WebhookHook, body: dict[str, Any], raw: bytes,
                     idempotency_key: str | None) -> tuple[Job, bool]:
        """Create the job (or find the one this idempotency key made) and start it. Returns (job, new)."""
        request = hook_request(name, hook, body)
        if request.callback_url is not None:
            try:  # resolves the host: off the event loop
                await asyncio.to_thread(check_callback, request.callback_url, self.config.callback_hosts)
            except CallbackRefused as exc:
                raise WebhookError(400, f"callback_url refused: {exc}", "callback_refused") from None
        if hook.profile is not None and hook.profile not in getattr(self.settings, "profiles", {hook.profile: 0}):
            raise WebhookError(503, f"webhook '{name}' names profile '{hook.profile}', which is not configured "
                                    f"(profiles in configs/routes.yaml)", "hook_misconfigured")
        model = hook.model or self.settings.default_model
        if model not in self.settings.models:
            raise WebhookError(503, f"webhook '{name}' names model '{model}', which is not configured "
                                    f"(models in configs/models.yaml)", "hook_misconfigured")
        self.principal(name, hook)
        self._check_conversation(name, hook, request.conversation_id)
        digest = hashlib.sha256(raw).hexdigest()
        job, created = await asyncio.to_thread(self.jobs.create, name, digest, idempotency_key,
                                               request.callback_url)
        if not created:
            if await asyncio.to_thread(self.jobs.body_sha256, job.id) != digest:
                raise WebhookError(422, "this Idempotency-Key was already used with a different body; use a new "
                                        "key for a new request", "idempotency_key_reused")
            return job, False
        self._spawn(job.id, self._run(name, hook, job.id, request, model))
        return job, True

    def principal(self, name: str, hook: WebhookHook) -> Principal:
        try:
            return webhook_principal(self.settings, name, hook.scope)
        except UnknownPreset as exc:
            raise WebhookError(503, f"webhook '{name}': {exc}", "hook_misconfigured") from None

    def _check_conversation(self, name: str, hook: WebhookHook, cid: str | None) -> None:
        """Someone else's conversation is refused before a job exists, like an unknown one would be
        by GET /conversations/{id}: the caller learns nothing about whose it is."""
        namespace = self.conversations.namespace_of(cid) if cid else None
        if namespace is not None and not self.principal(name, hook).may_address(namespace):
            raise WebhookError(404, f"conversation '{cid}' does not exist", "not_found")

    async def _turn(self, name: str, hook: WebhookHook, request: HookRequest, model: str) -> ChatTurn:
        messages = [ChatMessage(role="system", content=hook.system_prompt)] if hook.system_prompt else []
        messages.append(ChatMessage(role="user", content=request.prompt))
        principal = self.principal(name, hook)
        cid = request.conversation_id
        if cid is None:
            # Each call gets its own conversation, titled so the owner sees where it came from.
            title = f"webhook {name}: {request.prompt[:60]}"
            cid = (await asyncio.to_thread(self.conversations.create, title=title,
                                           namespace=principal.namespace)).id
        params = GenerationParams(max_tokens=hook.max_tokens, adapter=request.adapter)
        return ChatTurn(model=model, messages=messages, params=params, conversation_id=cid, stream=False,
                        principal=principal, **_turn_extras(name, hook))

    async def _run(self, name: str, hook: WebhookHook, job_id: str, request: HookRequest, model: str) -> None:
        try:
            run = await self.chat.start(await self._turn(name, hook, request, model))
            await asyncio.to_thread(self.jobs.running, job_id, run.task_id, run.conversation_id)
            result = await run.result()
            await asyncio.to_thread(self.jobs.succeeded, job_id, result_view(result))
        except ChatFailed as exc:
            await asyncio.to_thread(self.jobs.failed, job_id, exc.info.model_dump())
        except Exception as exc:  # a job must always end in a state the caller can read
            log.exception("webhook job %s failed", job_id)
            await asyncio.to_thread(self.jobs.failed, job_id, {"code": "internal", "status": 500,
                                                               "message": str(exc)})
        await self._announce_end(job_id)
        if request.callback_url:
            await self._deliver(name, job_id)

    async def _resume(self, job_id: str) -> None:
        """Finish a job a killed API process left running: succeeded with its turn's
        recovered answer, or failed with the reason; then its callback, if any."""
        job = await asyncio.to_thread(self.jobs.get, job_id)
        assert job is not None
        try:
            result, error = await recovered_outcome(self.chat, job.task_id)
        except Exception as exc:  # a job must always end in a state the caller can read
            log.exception("webhook job %s could not be recovered", job_id)
            result, error = None, interrupted(f"and recovering it failed: {exc.__class__.__name__}: {exc}")
        if result is not None:
            await asyncio.to_thread(self.jobs.succeeded, job_id, result_view(result))
        else:
            await asyncio.to_thread(self.jobs.failed, job_id, error)
        log.warning("webhook job %s settled after restart: %s", job_id, "succeeded" if result else "failed")
        await self._announce_end(job_id)
        if job.callback is not None:
            await self._deliver(job.hook, job_id)

    async def _announce_end(self, job_id: str) -> None:
        """Tell every waiter the job ended (its state is in the job store already)."""
        try:
            await self.chat.dispatcher.announce(job_stream_id(job_id), StreamEvent(
                type="done", result=TaskResult(text="", model="webhook")))
        except Exception:  # waiters then see the end at their timeout; the job itself is fine
            log.exception("could not announce the end of webhook job %s", job_id)

    async def wait(self, job_id: str, timeout_s: float) -> Job:
        """The job once finished, or as it is after `timeout_s`."""
        task = self._tasks.get(job_id)
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout_s)
            except asyncio.TimeoutError:
                pass
        else:  # run by another request (of this process or another one): follow its stream
            job = await asyncio.to_thread(self.jobs.get, job_id)
            if job is not None and not job.finished:
                try:
                    await self.chat.dispatcher.wait(job_stream_id(job_id), "webhooks", timeout_s)
                except DispatchError:
                    pass  # not finished within timeout_s: answered as it is (202)
        job = await asyncio.to_thread(self.jobs.get, job_id)
        assert job is not None
        return job

    # --- callbacks ---

    async def _deliver(self, name: str, job_id: str) -> None:
        """POST the finished job to its callback_url, signed; retry 5xx/408/429/network errors
        with exponential backoff, give up at once on other 4xx (the receiver refuses it)."""
        hook = self.config.hooks.get(name)
        job = await asyncio.to_thread(self.jobs.get, job_id)
        if job is None or job.callback is None or hook is None or hook.secret is None:
            return
        view = job.model_dump(mode="json")
        secret = hook.secret.get_secret_value()
        delay = self.config.callback_backoff_s
        attempts = job.callback.attempts
        # PinnedTransport checks the host again now and connects to the address it checked.
        async with httpx.AsyncClient(timeout=self.config.callback_timeout_s, follow_redirects=False,
                                     transport=PinnedTransport(self.config.callback_hosts)) as client:
            while attempts < self.config.callback_attempts:
                attempts += 1
                # The attempt number is part of the signed body, so each retry has its own
                # signature and a receiver that refuses replays still accepts the retry.
                body = json.dumps({**view, "callback_attempt": attempts}).encode()
                headers = {"Content-Type": "application/json", "X-Appliance-Job-Id": job_id,
                           "X-Appliance-Hook": name, "Idempotency-Key": job_id, **signed_headers(secret, body)}
                try:
                    resp = await client.post(job.callback.url, content=body, headers=headers)
                    error = None if resp.status_code < 300 else f"receiver answered HTTP {resp.status_code}"
                    retry = resp.status_code >= 500 or resp.status_code in (408, 429)
                except httpx.HTTPError as exc:
                    error, retry = f"could not reach the callback URL: {type(exc).__name__}: {exc}", True
                except CallbackRefused as exc:  # checked again at delivery: DNS may have changed
                    error, retry = f"callback_url refused: {exc}", isinstance(exc, CallbackUnresolvable)
                if error is None:
                    await asyncio.to_thread(self.jobs.callback_attempt, job_id, attempts, "delivered", None)
                    return
                final = not retry or attempts >= self.config.callback_attempts
                await asyncio.to_thread(self.jobs.callback_attempt, job_id, attempts,
                                        "failed" if final else "pending", error)
                log.warning("callback of job %s, attempt %d: %s", job_id, attempts, error)
                if final:
                    return
                await asyncio.sleep(delay)
                delay *= 2

