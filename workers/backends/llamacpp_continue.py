"""Continue a final assistant message on a llama.cpp model (what vLLM calls
`continue_final_message`): a redelivered answer resumes from the text already sent.

llama-cpp-python's chat completion always ends the prompt with a new assistant turn.
Here the model's own chat template (GGUF metadata) renders the conversation with the
final assistant message holding a marker; the prompt is cut at the marker and the sent
text appended, so the model's next token follows that text inside the same turn. A
marker rather than the text itself: templates may trim or rewrite message content.
"""

from __future__ import annotations

from typing import Any, Iterator

from configs.contracts.errors import BadGenerationRequest

MARKER = "\u2063CONTINUE-HERE\u2063"
# Options of a chat completion that a plain completion takes as they are.
COMPLETION_OPTIONS = ("max_tokens", "temperature", "top_p", "stop", "seed", "presence_penalty",
                      "frequency_penalty", "logits_processor")


def continued_prompt(llm: Any, messages: list[dict[str, Any]]) -> tuple[str, str]:
    """(prompt ending in the final assistant message's text, the model's end-of-turn text)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise BadGenerationRequest("this GGUF model has no chat template, so an interrupted answer cannot be "
                                   "continued; send the request again")
    eos = llm._model.token_get_text(llm.token_eos()) if llm.token_eos() != -1 else ""
    bos = llm._model.token_get_text(llm.token_bos()) if llm.token_bos() != -1 else ""
    formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos, add_generation_prompt=False)
    sent = messages[-1]["content"]
    rendered = formatter(messages=[*messages[:-1], {"role": "assistant", "content": MARKER}]).prompt
    cut = rendered.rfind(MARKER)
    if cut < 0:
        raise BadGenerationRequest("the model's chat template drops the assistant message, so an interrupted "
                                   "answer cannot be continued; send the request again")
    return rendered[:cut] + sent, eos


def continue_chunks(llm: Any, messages: list[dict[str, Any]], options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Stream the continuation in the shape of chat-completion chunks."""
    prompt, eos = continued_prompt(llm, messages)
    kwargs = {k: v for k, v in options.items() if k in COMPLETION_OPTIONS}
    kwargs["stop"] = [*(kwargs.get("stop") or []), *([eos] if eos else [])]
    # The rendered template carries its own BOS (as llama-cpp-python's chat handler assumes).
    tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    for chunk in llm.create_completion(prompt=tokens, stream=True, **kwargs):
        choice = chunk["choices"][0]
        yield {"choices": [{"delta": {"content": choice.get("text") or ""},
                            "finish_reason": choice.get("finish_reason")}]}
