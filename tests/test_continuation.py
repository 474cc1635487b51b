"""A redelivered answer continues the text already sent, on both model backends.

The model is asked to continue a final assistant message (vLLM: continue_final_message;
llama.cpp: the chat template cut at that message). With greedy decoding, continuing a
word-boundary prefix of the model's own answer must reproduce that answer: proof that
the continuation resumes inside the same assistant turn instead of starting a new one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from configs.contracts.attempts import AttemptFold
from configs.contracts.errors import BadGenerationRequest
from configs.contracts.tasks import ChatMessage, ChatTask, GenerationParams, StreamEvent
from configs.loader import load_settings
from tests.support.vllm_server import VllmServer, vllm_server  # noqa: F401  (fixture)
from workers.backends.base import ChatBackend
from workers.backends.llamacpp_chat import LlamaCppChat
from workers.backends.openai_chat import OpenAICompatibleChat
from workers.continuation import SentSoFar, continued

QUESTION = [ChatMessage(role="user", content="Tell me about the city of Paris.")]
GREEDY = GenerationParams(max_tokens=40, temperature=0.0, seed=1)


def text(backend: ChatBackend, messages: list[ChatMessage], params: GenerationParams) -> str:
    return "".join(d.text for d in backend.stream(messages, params))


def assert_continues(backend: ChatBackend) -> None:
    full = text(backend, QUESTION, GREEDY)
    words = full.split(" ")
    assert len(words) > 8, full
    sent = " ".join(words[:5])
    messages, params = continued(ChatTask(model="core", messages=QUESTION, params=GREEDY), SentSoFar(text=sent, tokens=6))
    rest = text(backend, messages, params)
    assert rest and not rest.startswith(sent), rest  # not a new answer from the start
    joined = sent + rest
    # At least the next word after the cut is the one the uninterrupted answer had.
    next_word = len(sent) + 1 + len(words[5])
    assert joined[:next_word] == full[:next_word], (full, joined)


def test_llamacpp_continues_a_final_assistant_message(tmp_path: Path) -> None:
    settings = load_settings(environ={}, overrides={"data_dir": str(tmp_path)})
    assert_continues(LlamaCppChat("core", settings.models["core"], settings=settings))


@pytest.mark.vllm
def test_vllm_continues_a_final_assistant_message(vllm_server: VllmServer) -> None:  # noqa: F811
    from tests.test_vllm_backend import vllm_settings

    settings = vllm_settings(vllm_server.base_url)
    assert_continues(OpenAICompatibleChat("core", settings.models["core"], settings=settings))


def test_a_constrained_answer_with_text_sent_is_refused_not_restarted() -> None:
    task = ChatTask(model="core", messages=QUESTION,
                    params=GenerationParams(response_format={"type": "json_object"}))
    with pytest.raises(BadGenerationRequest, match="cannot be continued"):
        continued(task, SentSoFar(text='{"answer": "Par', tokens=5))
    # Nothing sent yet: the attempt just generates, unchanged.
    assert continued(task, SentSoFar()) == (task.messages, task.params)


def test_events_of_a_superseded_attempt_are_ignored() -> None:
    fold = AttemptFold()
    stream = [StreamEvent(type="attempt", attempt=1), StreamEvent(type="token", attempt=1, text="Hello"),
              StreamEvent(type="attempt", attempt=2),
              # the first delivery was only stalled: it comes back, too late
              StreamEvent(type="token", attempt=1, text=" LATE"), StreamEvent(type="heartbeat", attempt=1),
              StreamEvent(type="token", attempt=2, text=" world")]
    accepted = [fold.accept(e) for e in stream]
    assert accepted == [True, True, True, False, False, True]
    assert fold.text == "Hello world" and fold.tokens == 2
