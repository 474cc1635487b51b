"""Chat with any OpenAI-compatible server (vLLM in production) by base URL."""

from __future__ import annotations

import uuid
from typing import Any, Iterator

import httpx
import openai

from configs.loader import get_settings
from configs.schema import ChatModelConfig, Settings
from lora_manager import settings_glue
from lora_manager.drivers.vllm import VllmAdapterDriver
from lora_manager.metrics import AdapterMetrics
from lora_manager.residency import Residency
from workers.backends.base import ChatDelta
from configs.contracts.errors import BadGenerationRequest, ModelUnavailable, TransientBackendError
from configs.contracts.tasks import ChatMessage, FunctionCall, GenerationParams, ToolCall, Usage


# Where an OpenAI-compatible server puts a reasoning parser's output: vLLM 0.32 sends
# `reasoning` (it renamed `reasoning_content` in 0.11); DeepSeek-style servers and
# older vLLM send `reasoning_content`. Both are read, so either server works.
REASONING_FIELDS = ("reasoning", "reasoning_content")


def delta_reasoning(delta: Any) -> str:
    """The reasoning text of one stream delta ("" when it carries none)."""
    if delta is None:
        return ""
    extra = getattr(delta, "model_extra", None) or {}
    for name in REASONING_FIELDS:
        value = getattr(delta, name, None) or extra.get(name)
        if value:
            return str(value)
    return ""


class OpenAICompatibleChat:
    """ChatBackend over an OpenAI-compatible /v1/chat/completions endpoint."""

    def __init__(self, model_name: str, config: ChatModelConfig, settings: Settings | None = None) -> None:
        self.model_name = model_name
        self.config = config
        key = config.api_key.get_secret_value() if config.api_key else "not-needed"
        self.client = openai.OpenAI(
            base_url=config.base_url, api_key=key, timeout=config.request_timeout_s, max_retries=0
        )
        self.served_model = config.served_model or model_name
        self._settings = settings
        self._residency: Residency | None = None

    def _adapter_residency(self) -> Residency:
        """LoRA adapters on this server: loaded on demand, LRU-evicted at adapters.max_loras,
        reloaded after a server restart (lora_manager). Built on first use."""
        if self._residency is None:
            settings = self._settings or get_settings()
            registry = settings_glue.registry(settings)
            driver = VllmAdapterDriver(self.config.base_url or "", registry,
                                       api_key=self.config.api_key.get_secret_value() if self.config.api_key else None,
                                       server_dir=settings.adapters.server_dir)
            self._residency = Residency(driver, registry, settings.adapters.max_loras,
                                        AdapterMetrics(persist_dir=settings_glue.metrics_dir(settings)))
        return self._residency

    def _unreachable(self, exc: Exception) -> ModelUnavailable:
        return ModelUnavailable(
            f"model '{self.model_name}': the server at {self.config.base_url} is unreachable "
            f"({exc.__class__.__name__}: {exc}). Fix: start the model server (vLLM) or correct "
            f"models.{self.model_name}.base_url."
        )

    def check(self) -> None:
        try:
            served = [m.id for m in self.client.models.list().data]
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise self._unreachable(exc) from exc
        except openai.APIStatusError as exc:
            raise ModelUnavailable(f"model '{self.model_name}': server answered {exc.status_code}: {exc.message}") from exc
        if self.served_model not in served:
            raise ModelUnavailable(
                f"model '{self.model_name}': server {self.config.base_url} serves {served}, "
                f"not '{self.served_model}'. Fix: set models.{self.model_name}.served_model."
            )

    def _request_kwargs(self, params: GenerationParams) -> dict[str, Any]:
        cfg = self.config
        kwargs: dict[str, Any] = dict(
            model=params.adapter or self.served_model,
            max_tokens=params.max_tokens or cfg.max_tokens,
            temperature=cfg.temperature if params.temperature is None else params.temperature,
            top_p=params.top_p or cfg.top_p,
        )
        if params.stop:
            kwargs["stop"] = params.stop
        if params.seed is not None:
            kwargs["seed"] = params.seed
        if params.response_format:
            kwargs["response_format"] = params.response_format
        extra: dict[str, Any] = {}
        if params.thinking is not None:
            # vLLM passes this to the chat template (Qwen3's enable_thinking switch).
            extra["chat_template_kwargs"] = {"enable_thinking": params.thinking}
        if params.continue_final_message:
            # A redelivered answer continues the text already sent (workers/continuation.py).
            extra.update(continue_final_message=True, add_generation_prompt=False)
        if extra:
            kwargs["extra_body"] = extra
        # Passed through as OpenAI defines them: vLLM serves tools with its tool-call
        # parser ("auto", needs --enable-auto-tool-choice) or structured outputs
        # ("required" and a named function), and has penalties, logit_bias and logprobs.
        for name in ("tools", "tool_choice", "parallel_tool_calls", "presence_penalty", "frequency_penalty",
                     "logit_bias", "logprobs", "top_logprobs"):
            if getattr(params, name) is not None:
                kwargs[name] = getattr(params, name)
        return kwargs

    def stream(self, messages: list[ChatMessage], params: GenerationParams) -> Iterator[ChatDelta]:
        if not params.adapter:
            yield from self._stream(messages, params)
            return
        # The adapter stays resident (never evicted) until this request is done.
        with self._adapter_residency().use(params.adapter):
            yield from self._stream(messages, params)

    def _stream(self, messages: list[ChatMessage], params: GenerationParams) -> Iterator[ChatDelta]:
        kwargs = self._request_kwargs(params)
        try:
            chunks = self.client.chat.completions.create(
                messages=[m.wire() for m in messages], stream=True,
                stream_options={"include_usage": True}, **kwargs,
            )
            finish = "stop"
            usage = Usage()
            calls = ToolCallAssembler()
            for chunk in chunks:
                if chunk.usage:
                    usage = Usage(prompt_tokens=chunk.usage.prompt_tokens,
                                  completion_tokens=chunk.usage.completion_tokens)
                for choice in chunk.choices:
                    reasoning = delta_reasoning(choice.delta)
                    logprobs = [t.model_dump() for t in choice.logprobs.content or []] \
                        if choice.logprobs is not None else None
                    if choice.delta and (choice.delta.content or reasoning or logprobs):
                        yield ChatDelta(text=choice.delta.content or "", reasoning=reasoning, logprobs=logprobs)
                    if choice.delta and choice.delta.tool_calls:
                        calls.add(choice.delta.tool_calls)
                    if choice.finish_reason:
                        finish = choice.finish_reason
        # APITimeoutError subclasses APIConnectionError: it must be caught first, or a
        # timeout becomes a non-retried "unreachable". A read timeout in the middle of a
        # stream comes from httpx directly (the openai client does not wrap it).
        except (openai.APITimeoutError, httpx.TimeoutException) as exc:
            raise TransientBackendError(
                f"model '{self.model_name}': request timed out after {self.config.request_timeout_s:g}s "
                f"(models.{self.model_name}.request_timeout_s): {exc}") from exc
        except openai.APIConnectionError as exc:
            raise self._unreachable(exc) from exc
        except openai.BadRequestError as exc:
            raise BadGenerationRequest(f"model '{self.model_name}': {exc.message}") from exc
        except openai.NotFoundError as exc:
            raise ModelUnavailable(
                f"model '{self.model_name}': server does not serve '{kwargs['model']}': {exc.message}"
            ) from exc
        except openai.APIStatusError as exc:
            if exc.status_code >= 500:
                raise TransientBackendError(f"model '{self.model_name}': server error {exc.status_code}: {exc.message}") from exc
            raise BadGenerationRequest(f"model '{self.model_name}': {exc.status_code}: {exc.message}") from exc
        if calls.calls():
            yield ChatDelta(tool_calls=calls.calls())
        yield ChatDelta(finish_reason=finish, usage=usage)


class ToolCallAssembler:
    """Joins streamed `delta.tool_calls` fragments (by index) into whole calls."""

    def __init__(self) -> None:
        self._parts: dict[int, dict[str, str]] = {}

    def add(self, fragments: list[Any]) -> None:
        for frag in fragments:
            part = self._parts.setdefault(frag.index, {"id": "", "name": "", "arguments": ""})
            if frag.id:
                part["id"] = frag.id
            if frag.function is not None:
                part["name"] += frag.function.name or ""
                part["arguments"] += frag.function.arguments or ""

    def calls(self) -> list[ToolCall]:
        return [ToolCall(id=p["id"] or f"call_{uuid.uuid4().hex[:24]}",
                         function=FunctionCall(name=p["name"], arguments=p["arguments"] or "{}"))
                for _, p in sorted(self._parts.items())]
