"""--kind knowledge: question/answer pairs written by the core model from each chunk,
through our own `chat` queue (the same worker that answers the owner), then SFT on them.

Run after the split, on each side separately, so the held-out pairs come from held-out
documents only. The model answers under a JSON schema with thinking off; a chunk whose
reply is not a usable pair is skipped and counted.
"""

from __future__ import annotations

import json
from typing import Callable

from configs.contracts.tasks import ChatMessage, ChatTask, GenerationParams
from configs.schema import Settings
from lora_manager.training.dataset import Example, PreparedData
from lora_manager.training.spec import TrainingRefused
from workers.training.sources import call_queue

Say = Callable[[str], None]
CHAT_GENERATE = "chat.generate"
PROMPT = ("Read the text below and write one question a reader could ask about it, and the answer, "
          "using only facts from the text, in the text's language. Reply as JSON with the keys "
          "\"question\" and \"answer\".\n\nText:\n{text}")
SCHEMA = {"type": "json_schema", "json_schema": {"name": "qa_pair", "schema": {
    "type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
    "required": ["question", "answer"]}}}


def qa_pair(text: str, settings: Settings, model: str) -> dict[str, str] | None:
    task = ChatTask(model=model, stream=False, messages=[ChatMessage(role="user", content=PROMPT.format(text=text))],
                    params=GenerationParams(max_tokens=256, temperature=0.0, seed=0, response_format=SCHEMA,
                                            thinking=False))
    result = call_queue(settings, CHAT_GENERATE, task.model_dump(), timeout_s=600)
    try:
        pair = json.loads(result.text)
    except json.JSONDecodeError:
        return None
    if not isinstance(pair, dict):
        return None
    question, answer = str(pair.get("question", "")).strip(), str(pair.get("answer", "")).strip()
    return {"question": question, "answer": answer} if question and answer else None


def to_pairs(examples: list[Example], settings: Settings, model: str, say: Say, label: str) -> list[Example]:
    out, skipped = [], 0
    for i, example in enumerate(examples, start=1):
        if example.messages is not None:  # already a chat example (JSONL source)
            out.append(example)
            continue
        pair = qa_pair(example.text or "", settings, model)
        if pair is None:
            skipped += 1
        else:
            out.append(Example(doc=example.doc, messages=[{"role": "user", "content": pair["question"]},
                                                          {"role": "assistant", "content": pair["answer"]}]))
        say(f"generating {label} question/answer pairs: {i}/{len(examples)}")
    if skipped:
        say(f"{skipped} {label} chunk(s) gave no usable pair")
    return out


def generate(data: PreparedData, settings: Settings, model: str, say: Say) -> PreparedData:
    train = to_pairs(data.train, settings, model, say, "training")
    held_out = to_pairs(data.eval, settings, model, say, "held-out")
    if not train or not held_out:
        raise TrainingRefused("the core model produced no usable question/answer pairs for the training or "
                              "the held-out split. Fix: check that the chat worker runs the core model, or "
                              "train --kind style.")
    report = data.report.model_copy(update={"train_examples": len(train), "eval_examples": len(held_out)})
    return PreparedData(train=train, eval=held_out, report=report)
