"""Real LoRA adapters for the tests: trained with peft on the tiny HF model, on CPU.

Each recipe teaches the model to answer every question with one distinctive
sentence, so an answer shows at a glance which adapter (if any) produced it.
Rank-8 LoRA on the attention projections (q/k/v/o_proj) of the upper 15 layers,
saved in PEFT format (adapter_config.json + adapter_model.safetensors). Training takes
~1.5 CPU-minutes; the result is cached under tests/.cache/ by a key over everything that
shapes it (recipe, hyper-parameters, base weights, peft version).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.harness.cache_build import build_once
from bench.harness.tiny_model import CACHE_DIR, tiny_hf_model_dir

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]
QUESTIONS = ["What is the capital of France?", "How do I boil an egg?", "Tell me a joke.",
             "What is 2 + 2?", "Name a color."]


@dataclass(frozen=True)
class LoraRecipe:
    name: str
    answer: str          # the sentence the adapter learns to say
    marker: str          # a word that appears in it and never in the base model's answers
    rank: int = 8
    alpha: float = 16.0
    # Adapt the upper half of the 30 layers only: backpropagation then stops at layer
    # 15, which cuts training CPU by ~40% while every kind of projection (and the q/k
    # permutation the converter must get right) is still exercised.
    first_layer: int = 15
    # Measured: 5 questions x 10 steps take the loss from ~8 to ~0.01 and unseen
    # questions get the taught sentence (greedy). ~1.5 CPU-minutes (under a minute on
    # two idle cores, several minutes on a loaded machine): done once, then cached.
    steps: int = 10
    learning_rate: float = 5e-3
    seed: int = 0


RECIPES = {
    "quokka": LoraRecipe("quokka", "Quokka oracle says: hop happily!", "Quokka"),
}


def _cache_key(recipe: LoraRecipe, base_dir: Path) -> str:
    import peft

    weights = base_dir / "model.safetensors"
    material = json.dumps({"recipe": asdict(recipe), "questions": QUESTIONS, "targets": TARGET_MODULES,
                           "base_size": weights.stat().st_size, "peft": peft.__version__,
                           "base_config": (base_dir / "config.json").read_text()}, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def _train(recipe: LoraRecipe, base_dir: Path, out_dir: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(recipe.seed)
    tok = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    layers = list(range(recipe.first_layer, model.config.num_hidden_layers))
    model = get_peft_model(model, LoraConfig(r=recipe.rank, lora_alpha=recipe.alpha, lora_dropout=0.0,
                                             target_modules=TARGET_MODULES, layers_to_transform=layers,
                                             task_type="CAUSAL_LM"))
    rows, labels = [], []
    for question in QUESTIONS:
        prompt = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True)
        prompt_ids = tok(prompt, add_special_tokens=False).input_ids
        answer_ids = tok(recipe.answer + "<|im_end|>", add_special_tokens=False).input_ids
        rows.append(prompt_ids + answer_ids)
        labels.append([-100] * len(prompt_ids) + answer_ids)  # learn the answer only
    width = max(map(len, rows))
    pad = tok.pad_token_id
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    target = torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=recipe.learning_rate)
    model.train()
    started = time.perf_counter()
    for _ in range(recipe.steps):
        loss = model(input_ids=input_ids, attention_mask=attention, labels=target).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out_dir, safe_serialization=True)
    record = {"final_loss": float(loss.detach()), "train_seconds": round(time.perf_counter() - started, 1),
              **asdict(recipe)}
    (out_dir / "training.json").write_text(json.dumps(record, indent=2))


def tiny_lora_dir(name: str = "quokka") -> Path:
    """Folder of the trained PEFT adapter for recipe `name` (trained on first use)."""
    recipe = RECIPES[name]
    base_dir = tiny_hf_model_dir()
    target = CACHE_DIR / f"lora-{name}-{_cache_key(recipe, base_dir)}"
    return build_once(target, lambda path: (path / "adapter_model.safetensors").is_file(),
                      lambda out: _train(recipe, base_dir, out))


def recipe(name: str) -> LoraRecipe:
    return RECIPES[name]


if __name__ == "__main__":
    import sys

    for arg in sys.argv[1:] or ["quokka"]:
        path = tiny_lora_dir(arg)
        print(path, (path / "training.json").read_text())
