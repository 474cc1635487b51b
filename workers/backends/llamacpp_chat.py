"""Chat with a GGUF model through llama-cpp-python, inside the worker process.

This is the embedded default: no server, the model lives in the Celery worker's
child process. One Llama object per process; a lock serialises generations because
a llama.cpp context is not safe to share between threads.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from typing import Any, Iterator

from configs.model_files import resolve_gguf_path
from configs.schema import ChatModelConfig, Settings
from workers.backends.think_split import ThinkSplitter
from workers.backends.base import ChatDelta
from workers.backends.llamacpp_continue import continue_chunks
from workers.backends.llamacpp_logprobs import LogitBias, LogprobRecorder
from workers.backends.llamacpp_tools import ToolRequest, grammar_text, looks_like_call, parse_calls, render_messages
from configs.contracts.errors import BadGenerationRequest, ModelUnavailable
from configs.contracts.tasks import ChatMessage, GenerationParams, Usage

def _llama_response_format(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """Map OpenAI response_format to llama-cpp-python's JSON-schema grammar option."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise BadGenerationRequest("response_format json_schema needs json_schema.schema (an object)")
        return {"type": "json_object", "schema": schema}
    if kind == "json_object":
        return {"type": "json_object", "schema": response_format.get("schema")} if response_format.get("schema") else {"type": "json_object"}
    if kind == "text":
        return None
    raise BadGenerationRequest(f"response_format type '{kind}' is not supported; use text, json_object or json_schema")


class LlamaCppChat:
    """ChatBackend over llama-cpp-python."""

    def __init__(self, model_name: str, config: ChatModelConfig, settings: Settings | None = None) -> None:
        self.model_name = model_name
        self.config = config
        self._llm: Any = None
        self._lock = threading.Lock()
        # LoRA adapters (lora_manager): built on the first request that names one.
        self._settings = settings
        self._adapters: Any = None

    def check(self) -> None:
        resolve_gguf_path(self.model_name, self.config)

    @property
    def llama(self) -> Any:
        """The loaded llama_cpp.Llama (loaded on first use)."""
        if self._llm is None:
            path = resolve_gguf_path(self.model_name, self.config)
            from llama_cpp import Llama

            kwargs: dict[str, Any] = dict(
                model_path=str(path), n_ctx=self.config.n_ctx, n_batch=self.config.n_batch,
                verbose=False,
            )
            if self.config.n_threads:
                kwargs["n_threads"] = self.config.n_threads
            try:
                self._llm = Llama(**kwargs)
            except (ValueError, RuntimeError) as exc:
                raise ModelUnavailable(
                    f"model '{self.model_name}': llama.cpp could not load {path}: {exc}. "
                    f"Fix: check the file is a complete GGUF model for this llama.cpp version."
                ) from exc
            self._preload_adapters()
        return self._llm

    def _preload_adapters(self) -> None:
        """Load pinned and configured adapters with the model (worker start), not on first use."""
        from configs.loader import get_settings
        from lora_manager import settings_glue

        settings = self._settings or get_settings()
        if settings.adapters.preload or any(r.pinned for r in settings_glue.registry(settings).list()):
            self.adapters  # noqa: B018 - building the runtime loads them (errors are logged there)

    def _generation_kwargs(self, params: GenerationParams, tools: ToolRequest | None = None) -> dict[str, Any]:
        cfg = self.config
        kwargs: dict[str, Any] = dict(
            max_tokens=params.max_tokens or cfg.max_tokens,
            temperature=cfg.temperature if params.temperature is None else params.temperature,
            top_p=params.top_p or cfg.top_p,
            stop=params.stop or [],
            seed=params.seed,
        )
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(params, name) is not None:
                kwargs[name] = getattr(params, name)
        if params.logit_bias:
            kwargs["logits_processor"] = [LogitBias(self._token_bias(params.logit_bias))]
        fmt = _llama_response_format(params.response_format)
        if tools is not None:
            if fmt:
                raise BadGenerationRequest("response_format cannot be combined with tools on a llama.cpp model "
                                           "(both constrain the answer); send one, or tool_choice \"none\"")
            from llama_cpp import LlamaGrammar

            kwargs["grammar"] = LlamaGrammar.from_string(grammar_text(tools), verbose=False)
        elif fmt:
            kwargs["response_format"] = fmt
        return kwargs

    def _token_bias(self, bias: dict[str, float]) -> dict[int, float]:
        """OpenAI logit_bias (token id -> -100..100) checked against this vocabulary."""
        vocab = self.llama.n_vocab()
        out: dict[int, float] = {}
        for key, value in bias.items():
            if not str(key).lstrip("-").isdigit() or not 0 <= int(key) < vocab:
                raise BadGenerationRequest(f"logit_bias: {key!r} is not a token id of model '{self.model_name}' "
                                           f"(0..{vocab - 1})")
            out[int(key)] = float(value)
        return out

    @property
    def adapters(self) -> Any:
        """lora_manager.llamacpp_runtime.LlamaCppAdapters of this model (built on first use)."""
        if self._adapters is None:
            from configs.loader import get_settings
            from lora_manager.llamacpp_runtime import LlamaCppAdapters

            path = resolve_gguf_path(self.model_name, self.config)
            self._adapters = LlamaCppAdapters.for_settings(self.llama, path, self._settings or get_settings())
        return self._adapters

    def stream(self, messages: list[ChatMessage], params: GenerationParams) -> Iterator[ChatDelta]:
        llm = self.llama
        tools = ToolRequest.from_params(params)
        kwargs = self._generation_kwargs(params, tools)
        payload = render_messages(messages, tools)
        recorder = LogprobRecorder(llm, params.top_logprobs or 0) if params.logprobs else None
        if recorder is not None:
            kwargs["logits_processor"] = [*kwargs.get("logits_processor", []), recorder]
        with self._lock:
            # The adapter is switched only under the lock: one request at a time runs on
            # this context, under exactly the adapter it asked for (or none).
            adapters = self.adapters if params.adapter else self._adapters
            serving = adapters.serving(params.adapter) if adapters is not None else nullcontext()
            with serving:
                yield from self._generate(llm, payload, kwargs, tools, recorder,
                                          continuing=bool(params.continue_final_message))

    def _generate(self, llm: Any, payload: list[dict], kwargs: dict[str, Any], tools: ToolRequest | None = None,
                  recorder: LogprobRecorder | None = None, continuing: bool = False) -> Iterator[ChatDelta]:
        """Run one generation on the (already locked, adapter-set) context.

        With tools, text is held back while it may be a tool call: always for
        "required", and for "auto" until the first visible character shows which
        branch of the grammar the model took (see llamacpp_tools)."""
        holding = tools is not None
        decided = tools is None or tools.mode == "required"
        try:
            chunks = (continue_chunks(llm, payload, kwargs) if continuing
                      else llm.create_chat_completion(messages=payload, stream=True, **kwargs))
            text_parts: list[str] = []
            finish = "stop"
            split = ThinkSplitter()  # a model that thinks inline: <think>...</think>
            for chunk in chunks:
                choice = chunk["choices"][0]
                piece = choice.get("delta", {}).get("content") or ""
                if piece:
                    text_parts.append(piece)
                    if not decided and "".join(text_parts).strip():
                        decided = True
                        holding = looks_like_call("".join(text_parts))
                        if not holding:
                            yield from _visible(split.feed("".join(text_parts)))
                    elif not holding:
                        yield from _visible(split.feed(piece))
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
            if holding:
                held = "".join(text_parts)
                calls = parse_calls(held, tools) if tools is not None else []
                if calls:
                    finish = "tool_calls"
                    yield ChatDelta(tool_calls=calls)
                elif tools is not None and tools.mode == "required":
                    raise BadGenerationRequest(
                        f"model '{self.model_name}' did not finish a valid tool call within "
                        f"max_tokens={kwargs['max_tokens']} (finish_reason {finish}). Fix: raise max_tokens.")
                elif held:
                    yield from _visible(split.feed(held))
            yield from _visible(split.flush())
        except ValueError as exc:
            # llama-cpp-python raises ValueError for prompts longer than n_ctx.
            raise BadGenerationRequest(
                f"model '{self.model_name}': {exc}. Fix: shorten the conversation or raise "
                f"models.{self.model_name}.n_ctx."
            ) from exc
        completion = len(llm.tokenize("".join(text_parts).encode(), add_bos=False, special=True)) if text_parts else 0
        prompt = max(0, llm.n_tokens - completion)
        logprobs = recorder.finish("".join(text_parts), finish) if recorder is not None else None
        yield ChatDelta(finish_reason=finish, usage=Usage(prompt_tokens=prompt, completion_tokens=completion),
                        logprobs=logprobs)


def _visible(split: tuple[str, str]) -> Iterator[ChatDelta]:
    """A delta for what the think-splitter let through (reasoning and/or answer text)."""
    reasoning, content = split
    if reasoning or content:
        yield ChatDelta(text=content, reasoning=reasoning)
