"""The training loop's checkpoints and resume, on a tiny randomly initialised llama
(2 layers, hidden 32: seconds, no download). A run cancelled after its checkpoint and
resumed must end exactly where an uninterrupted run ends: same loss at every step,
same adapter weights. That is what makes DELETE + resume safe for the owner's jobs."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from lora_manager.training.dataset import Example, SourceDocument, prepare
from lora_manager.training.loop import Progress, Window, latest_checkpoint, train
from lora_manager.training.spec import TrainingCancelled, TrainingRefused


def tiny_peft_model():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                               target_modules=["q_proj", "v_proj"]))


def data() -> list[Window]:
    rng = random.Random(1)
    rows = [[rng.randrange(1, 101) for _ in range(rng.randrange(8, 20))] for _ in range(7)]
    return [Window(r, list(r)) for r in rows]


def run(checkpoints: Path, stop_after: int | None = None) -> tuple:
    model = tiny_peft_model()
    seen: list[int] = []
    progress = Progress(on_step=lambda step, total, history: seen.append(step),
                        should_stop=lambda: stop_after is not None and len(seen) >= stop_after)
    result = train(model, data(), pad_id=0, steps=8, batch_size=3, peak_lr=1e-2, seed=3,
                   checkpoints=checkpoints, checkpoint_every=2, progress=progress)
    weights = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
    return result.loss_history, weights, result


def test_cancel_then_resume_ends_exactly_like_an_uninterrupted_run(tmp_path: Path) -> None:
    import torch

    straight_history, straight_weights, _ = run(tmp_path / "straight")
    with pytest.raises(TrainingCancelled, match="stopped at step 5 of 8"):
        run(tmp_path / "interrupted", stop_after=5)
    assert latest_checkpoint(tmp_path / "interrupted").name == "step-000005"
    history, weights, result = run(tmp_path / "interrupted")
    assert result.resumed_from == 5 and result.tokens > 0
    assert [s for s, _ in history] == list(range(1, 9))
    assert [loss for _, loss in history] == pytest.approx([loss for _, loss in straight_history], abs=1e-4)
    assert all(torch.allclose(weights[k], straight_weights[k], atol=1e-5) for k in straight_weights)
    # Only the newest checkpoints are kept.
    assert len(list((tmp_path / "straight").glob("step-*"))) == 2


def test_split_is_by_document_and_duplicates_are_dropped() -> None:
    docs = [SourceDocument(doc=f"d{i}", text=f"Paragraph one of document {i}, long enough to keep.\n\n"
                                             f"Paragraph two of document {i}, also long enough to keep.")
            for i in range(10)]
    docs.append(SourceDocument(doc="copy", text=docs[0].text.upper()))  # same text, other case
    prepared = prepare(docs, eval_share=0.2, seed=0)
    assert prepared.report.duplicate_documents == 1
    assert prepared.report.eval_documents == 2 and prepared.report.train_documents == 8
    assert not {e.doc for e in prepared.eval} & {e.doc for e in prepared.train}
    assert all(isinstance(e, Example) for e in prepared.train)
    with pytest.raises(TrainingRefused, match="needs at least 5"):
        prepare(docs[:4], eval_share=0.2)
