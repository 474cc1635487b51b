"""OpenAI `logprobs` / `top_logprobs` for llama.cpp without `logits_all`.

llama-cpp-python only returns logprobs for a model loaded with logits_all=True, which
keeps n_ctx x n_vocab floats (~400 MB for a 2k context and a 49k vocabulary) for every
request. Instead, a logits processor sees each step's raw logits anyway: it keeps the
log-softmax of the latest step, and when the next step starts (the sampled token is
then the last input id) records that token's logprob and the top alternatives.
The values are the model's distribution before sampling constraints (grammar, bias).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class LogprobRecorder:
    """A llama-cpp-python logits processor that records OpenAI-shaped token logprobs."""

    def __init__(self, llm: Any, top_n: int) -> None:
        self.llm = llm
        self.top_n = max(0, min(top_n, 20))
        self.content: list[dict[str, Any]] = []
        self._last: np.ndarray | None = None

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if self._last is not None and len(input_ids):
            self._record(int(input_ids[-1]))
        shifted = scores.astype(np.float64) - float(np.max(scores))
        self._last = shifted - np.log(np.sum(np.exp(shifted)))
        return scores

    def _entry(self, token_id: int, logprob: float) -> dict[str, Any]:
        raw = self.llm.detokenize([token_id])
        return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}

    def _record(self, token_id: int) -> None:
        assert self._last is not None
        if not self.llm.detokenize([token_id]):
            return  # end-of-generation and other special tokens carry no text
        entry = self._entry(token_id, float(self._last[token_id]))
        top = np.argsort(self._last)[::-1][: self.top_n] if self.top_n else []
        entry["top_logprobs"] = [self._entry(int(t), float(self._last[t])) for t in top]
        self.content.append(entry)

    def finish(self, text: str, finish_reason: str) -> list[dict[str, Any]]:
        """The recorded tokens; a generation cut by max_tokens ends on a token no later
        step saw, found by tokenizing the tail of the text."""
        if finish_reason == "length" and self._last is not None and text:
            tail = self.llm.tokenize(text.encode(), add_bos=False, special=True)
            if tail:
                self._record(tail[-1])
            self._last = None
        return self.content


class LogitBias:
    """OpenAI logit_bias as a logits processor. (llama-cpp-python's own logit_bias drops
    every other logits processor when both are given: it assigns list.extend's None.)"""

    def __init__(self, bias: dict[int, float]) -> None:
        self.ids = np.array(list(bias), dtype=np.intc)
        self.values = np.array(list(bias.values()), dtype=np.single)

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        scores = np.copy(scores)
        scores[self.ids] += self.values
        return scores
