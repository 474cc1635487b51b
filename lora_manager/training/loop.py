"""The PEFT training loop: a small loop instead of transformers' Trainer, because it must
report every step to the job's status file, stop between steps when the owner cancels,
and checkpoint/resume deterministically without pickles (safetensors + JSON only).

Determinism: the order of examples in epoch e is a permutation seeded by (seed, e), and
the learning rate is a function of the step, so a resumed run continues exactly where
the checkpoint left off.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from lora_manager.training.dataset import Example
from lora_manager.training.spec import TrainingCancelled

IGNORE = -100
KEEP_CHECKPOINTS = 2


@dataclass
class Window:
    ids: list[int]
    labels: list[int]


@dataclass
class Progress:
    # (step, total, loss history so far): the history includes steps before a resume
    on_step: Callable[[int, int, list[tuple[int, float]]], None] = lambda step, total, history: None
    on_checkpoint: Callable[[int], None] = lambda step: None
    should_stop: Callable[[], bool] = lambda: False


@dataclass
class LoopResult:
    steps: int
    resumed_from: int | None
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    tokens: int = 0          # tokens this process trained on (since the resume, if any)
    seconds: float = 0.0     # wall time of those steps


# --- examples -> token windows ---------------------------------------------------

def _chat_window(messages: list[dict[str, str]], tok: Any, seq_len: int) -> list[Window]:
    """Chat template text; only the assistant replies are learned (labels elsewhere ignored)."""
    full = tok.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            start = len(tok.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True))
            end = len(tok.apply_chat_template(messages[:i + 1], tokenize=False))
            spans.append((start, end))
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"][:seq_len]
    labels = [tid if any(s <= off[0] < e for s, e in spans) else IGNORE
              for tid, off in zip(ids, enc["offset_mapping"])]
    return [Window(ids, labels)] if any(label != IGNORE for label in labels) else []


def windows(examples: Sequence[Example], tok: Any, seq_len: int) -> list[Window]:
    out: list[Window] = []
    for example in examples:
        if example.messages is not None:
            out += _chat_window(example.messages, tok, seq_len)
            continue
        ids = tok(example.text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        for start in range(0, len(ids), seq_len):
            piece = ids[start:start + seq_len]
            if len(piece) >= 8:  # a stub of a few tokens is noise
                out.append(Window(piece, list(piece)))
    return out


def batch_tensors(batch: Sequence[Window], pad_id: int, device: Any) -> dict[str, Any]:
    import torch

    width = max(len(w.ids) for w in batch)
    ids = torch.tensor([w.ids + [pad_id] * (width - len(w.ids)) for w in batch], device=device)
    mask = torch.tensor([[1] * len(w.ids) + [0] * (width - len(w.ids)) for w in batch], device=device)
    labels = torch.tensor([w.labels + [IGNORE] * (width - len(w.labels)) for w in batch], device=device)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def token_loss(model: Any, data: Sequence[Window], pad_id: int, batch_size: int) -> tuple[float, int]:
    """Mean loss per predicted token over `data` (and how many tokens), no gradients."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(data), batch_size):
            batch = batch_tensors(data[i:i + batch_size], pad_id, model.device)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            shifted = batch["labels"][:, 1:]
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), shifted.reshape(-1),
                                   ignore_index=IGNORE, reduction="sum")
            total += float(loss)
            count += int((shifted != IGNORE).sum())
    return (total / count if count else float("nan")), count


# --- schedule -------------------------------------------------------------------

def total_steps(n_windows: int, batch_size: int, epochs: float, max_steps: int) -> int:
    if max_steps > 0:
        return max_steps
    return max(1, math.ceil(epochs * math.ceil(n_windows / batch_size)))


def learning_rate(step: int, total: int, peak: float) -> float:
    """Linear warm-up over 5% of the steps (at most 20), then linear decay to 10%."""
    warm = max(1, min(20, total // 20))
    if step < warm:
        return peak * (step + 1) / warm
    return peak * (1.0 - 0.9 * (step - warm) / max(1, total - warm))


def batch_at(step: int, n: int, batch_size: int, seed: int) -> list[int]:
    per_epoch = max(1, math.ceil(n / batch_size))
    epoch, pos = divmod(step, per_epoch)
    order = list(range(n))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order[pos * batch_size:(pos + 1) * batch_size]


# --- checkpoints ------------------------------------------------------------------

def _trainable(model: Any) -> list[Any]:
    return [p for p in model.parameters() if p.requires_grad]


def save_checkpoint(folder: Path, step: int, model: Any, optimizer: Any,
                    history: list[tuple[int, float]]) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".ckpt-", dir=folder))
    model.save_pretrained(tmp, safe_serialization=True)
    state = {}
    for i, param in enumerate(_trainable(model)):
        for key, value in optimizer.state.get(param, {}).items():
            state[f"{i}.{key}"] = value.detach().reshape(-1).clone().cpu() if key == "step" else \
                value.detach().contiguous().cpu()
    if state:
        save_file(state, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"step": step, "loss_history": history}), encoding="utf-8")
    target = folder / f"step-{step:06d}"
    shutil.rmtree(target, ignore_errors=True)
    os.rename(tmp, target)
    for old in sorted(folder.glob("step-*"))[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(folder: Path) -> Path | None:
    done = [p for p in sorted(folder.glob("step-*")) if (p / "state.json").is_file()] if folder.is_dir() else []
    return done[-1] if done else None


def load_checkpoint(path: Path, model: Any, optimizer: Any) -> tuple[int, list[tuple[int, float]]]:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(path / "adapter_model.safetensors"), device=str(model.device)))
    if (path / "optimizer.safetensors").is_file():
        saved = load_file(str(path / "optimizer.safetensors"), device=str(model.device))
        for i, param in enumerate(_trainable(model)):
            entry = {key.split(".", 1)[1]: value for key, value in saved.items() if key.split(".", 1)[0] == str(i)}
            if entry:
                if "step" in entry:
                    entry["step"] = entry["step"].reshape(()).cpu()
                optimizer.state[param] = entry
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    return int(state["step"]), [tuple(x) for x in state["loss_history"]]


# --- the loop ---------------------------------------------------------------------

def train(model: Any, data: Sequence[Window], *, pad_id: int, steps: int, batch_size: int, peak_lr: float,
          seed: int, checkpoints: Path, checkpoint_every: int, progress: Progress) -> LoopResult:
    """Train the PEFT `model` in place for `steps` optimizer steps, resuming from the
    latest checkpoint in `checkpoints` if there is one. Raises TrainingCancelled when
    progress.should_stop() turns true (after saving a checkpoint)."""
    import torch

    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(_trainable(model), lr=peak_lr, weight_decay=0.0)
    start, history, resumed = 0, [], None
    latest = latest_checkpoint(checkpoints)
    if latest is not None:
        start, history = load_checkpoint(latest, model, optimizer)
        resumed = start
    model.train()
    every = checkpoint_every or max(5, steps // 5)
    tokens, started = 0, time.perf_counter()
    for step in range(start, steps):
        if progress.should_stop():
            if step > start:
                save_checkpoint(checkpoints, step, model, optimizer, history)
            raise TrainingCancelled(f"training stopped at step {step} of {steps} on the owner's request; "
                                    f"nothing was registered. Resume continues from the last checkpoint.")
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, peak_lr)
        batch = batch_tensors([data[i] for i in batch_at(step, len(data), batch_size, seed)], pad_id, model.device)
        tokens += int(batch["attention_mask"].sum())
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(_trainable(model), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        history.append((step + 1, round(float(loss.detach()), 5)))
        progress.on_step(step + 1, steps, history)
        if (step + 1) % every == 0 and step + 1 < steps:
            save_checkpoint(checkpoints, step + 1, model, optimizer, history)
            progress.on_checkpoint(step + 1)
    model.eval()
    return LoopResult(steps=steps, resumed_from=resumed, loss_history=history, tokens=tokens,
                      seconds=time.perf_counter() - started)
