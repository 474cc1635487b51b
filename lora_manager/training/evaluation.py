"""What the owner learns about an adapter before using it, stored in its registry record.

1. Held-out loss: mean loss per token on the evaluation split (documents never seen in
   training), with the adapter and with it switched off (= the base), and the
   perplexities exp(loss). Lower with the adapter = it learned something that carries
   over to new text of the same kind, not just the training text.
2. Leakage probe: the same general questions (outside any owner's domain) answered
   greedily (temperature 0) with and without the adapter. `changed_share` is the share
   of answers that differ at all; `leakage` is 1 - mean text similarity (difflib ratio),
   0 = the adapter leaves general answers alone, 1 = it rewrites them completely. A
   domain adapter with high leakage should be gated tightly (--tasks / the policy).
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Sequence

from lora_manager.training.loop import Window, token_loss

# General questions, in both of the owner's languages; none about any training domain.
PROBE_QUESTIONS = [
    "What is the boiling point of water at sea level?",
    "Как называется столица Японии?",
    "Name three primary colors.",
    "Сколько дней в високосном году?",
    "What does a thermometer measure?",
    "Кто написал роман «Война и мир»?",
]
PROBE_TOKENS = 24


def _answer(model: Any, tok: Any, question: str, max_new_tokens: int) -> str:
    import torch

    prompt = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                     add_generation_prompt=True)
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, use_cache=True, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def leakage_probe(model: Any, tok: Any, questions: Sequence[str], max_new_tokens: int = PROBE_TOKENS) -> dict:
    rows = []
    for question in questions:
        tuned = _answer(model, tok, question, max_new_tokens)
        with model.disable_adapter():
            base = _answer(model, tok, question, max_new_tokens)
        rows.append({"question": question, "base": base, "adapter": tuned,
                     "similarity": round(difflib.SequenceMatcher(None, base, tuned).ratio(), 4)})
    n = max(1, len(rows))
    return {"questions": len(rows), "temperature": 0.0, "max_new_tokens": max_new_tokens,
            "changed_share": round(sum(r["base"] != r["adapter"] for r in rows) / n, 4),
            "leakage": round(1.0 - sum(r["similarity"] for r in rows) / n, 4), "answers": rows}


def evaluate(model: Any, tok: Any, held_out: Sequence[Window], batch_size: int, probe_questions: int) -> dict:
    adapter_loss, tokens = token_loss(model, held_out, tok.pad_token_id, batch_size)
    with model.disable_adapter():
        base_loss, _ = token_loss(model, held_out, tok.pad_token_id, batch_size)
    result: dict[str, Any] = {
        "eval_tokens": tokens, "eval_loss_base": round(base_loss, 5), "eval_loss_adapter": round(adapter_loss, 5),
        "perplexity_base": round(math.exp(base_loss), 3), "perplexity_adapter": round(math.exp(adapter_loss), 3)}
    result["leakage_probe"] = leakage_probe(model, tok, PROBE_QUESTIONS[:probe_questions])
    return result
