"""A tiny vision-language model, built and trained at test time, that vLLM 0.32's CPU
build serves: transformers `Idefics3ForConditionalGeneration` (the architecture of
SmolVLM: a SigLIP-style vision encoder, a pixel-shuffle connector and a Llama text
model) shrunk to 2 vision and 2 text layers.

Why not Qwen2-VL / Qwen2.5-VL (the production family): vLLM 0.32's qwen2_vl.py and
qwen2_5_vl.py (and llava.py, llava_next.py, qwen3_vl.py, gemma3_mm.py) import
`transformers.models.qwen2_vl.image_processing_qwen2_vl`, which in transformers 5
imports torchvision at module level. torchvision has no CPU wheel for torch
2.13.0+cpu here (the PyPI one breaks `import transformers`; DESIGN.md), so the
server refuses those architectures at start-up: "Model architectures
['Qwen2VLForConditionalGeneration'] failed to be inspected ... ModuleNotFoundError:
No module named 'torchvision'". idefics3.py (and smolvlm.py) use transformers'
processor classes, which fall back to the PIL image processor without torchvision.
The vision encoder runs on torch SDPA, the only ViT attention the CPU platform has.

Images: resized so the longest edge is IMAGE_EDGE (112 px), split into 56x56 tiles
(2x2 for a square image) plus one 56x56 global view; each tile is (56/14)^2 = 16
patches, pixel-shuffled by 2x2 into TILE_TOKENS = 4 image tokens. Text head_dim is
64 (vLLM's CPU attention refuses 16).

A few seconds of training teach it one honest, checkable skill: name the colour that
fills the image ("The image is red." / green / blue), whatever the instruction says.
An answer that names the right colour proves the pixels reached the model.

The tokenizer is SmolLM2's (ChatML) plus Idefics3's image tokens; the processor
configs are written here (no hub). Built once into .cache/ (atomically) and reused.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
from pathlib import Path

from bench.harness.cache_build import build_once
from bench.harness.tiny_model import CACHE_DIR, tiny_hf_model_dir

SERVED_NAME = "qwen2.5-vl-7b"     # what the production VLM is served as (configs/appliance-gpu.yaml)
PATCH = 14
TILE = 56                          # max_image_size: the vision encoder's input side
IMAGE_EDGE = 112                   # size.longest_edge: images are resized to this first
SCALE_FACTOR = 2                   # pixel shuffle: 2x2 patches -> one token
TILE_TOKENS = (TILE // PATCH) ** 2 // SCALE_FACTOR ** 2   # = 4
IMAGE_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>",
                *[f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]]
TEXT = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=64, max_position_embeddings=2048, rms_norm_eps=1e-5,
            rope_theta=10000.0, model_type="llama")
VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
              image_size=TILE, patch_size=PATCH, num_channels=3)
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
# Instructions seen in training; the vision worker's own (plans.image_plan) among them.
INSTRUCTIONS = ["Read all text in the attached image(s).", "Describe the image and transcribe any text."]
TRAINING = dict(steps=200, learning_rate=3e-3, seed=0)
STOP_LOSS = 0.03
BUILD_VERSION = "1"  # bump when the recipe changes: the cache key includes it

# ChatML (SmolLM2's) with an `<image>` placeholder per image part; the processor
# expands it into the tiles' token layout.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' or part['type'] == 'image_url' %}{{- '<image>' }}"
    "{%- elif part['type'] == 'text' %}{{- part['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def answer_for(colour: str) -> str:
    return f"The image is {colour}."


def png(colour: str, size: int = 112, noise: int = 0, seed: int = 0) -> bytes:
    """A size x size PNG filled with the colour (plus +-noise per channel)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = np.empty((size, size, 3), dtype=np.int16)
    pixels[:] = COLOURS[colour]
    if noise:
        pixels += rng.integers(-noise, noise + 1, size=pixels.shape, dtype=np.int16)
    out = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype("uint8")).save(out, format="PNG")
    return out.getvalue()


def data_url(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode()


def _key() -> str:
    material = json.dumps({"text": TEXT, "vision": VISION, "tile": [PATCH, TILE, IMAGE_EDGE, SCALE_FACTOR],
                           "colours": COLOURS, "instructions": INSTRUCTIONS, "training": TRAINING,
                           "template": CHAT_TEMPLATE, "tokens": IMAGE_TOKENS, "version": BUILD_VERSION},
                          sort_keys=True)
    return hashlib.sha1(material.encode()).hexdigest()


def _processor(tok):
    """Idefics3's processor with the tiny sizes (the PIL image processor: no torchvision)."""
    from transformers import Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    images = Idefics3ImageProcessorPil(do_resize=True, size={"longest_edge": IMAGE_EDGE},
                                       max_image_size={"longest_edge": TILE}, do_image_splitting=True)
    return Idefics3Processor(image_processor=images, tokenizer=tok, image_seq_len=TILE_TOKENS,
                             chat_template=CHAT_TEMPLATE)


def _examples(processor) -> dict:
    """One batch: a row per (colour, size, instruction), right-padded, prompt masked out."""
    import torch
    from PIL import Image

    tok = processor.tokenizer
    texts, images, targets = [], [], []
    seed = 0
    for colour in COLOURS:
        for size in (56, 112):
            for instruction in INSTRUCTIONS:
                seed += 1
                images.append([Image.open(io.BytesIO(png(colour, size, noise=25, seed=seed))).convert("RGB")])
                texts.append(processor.apply_chat_template(
                    [{"role": "user", "content": [{"type": "text", "text": instruction}, {"type": "image"}]}],
                    add_generation_prompt=True))
                targets.append(tok(answer_for(colour) + "<|im_end|>", add_special_tokens=False).input_ids)
    batch = processor(text=texts, images=images)                    # token ids: ragged lists
    pixels = processor.image_processor(images, return_tensors="pt")   # tiles: one tensor
    rows = [list(ids) + target for ids, target in zip(batch["input_ids"], targets)]
    width = max(map(len, rows))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.convert_tokens_to_ids("<|im_end|>")
    labels = [[-100] * len(ids) + target + [-100] * (width - len(ids) - len(target))
              for ids, target in zip(batch["input_ids"], targets)]
    return {"input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in rows]),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
            "labels": torch.tensor(labels), "pixel_values": pixels["pixel_values"],
            "pixel_attention_mask": pixels["pixel_attention_mask"]}


def _build(target: Path, progress=print) -> None:
    import torch

    torch.manual_seed(TRAINING["seed"])
    # One thread: these tensors are tiny, and on 2 shared cores a second thread costs
    # ten times the CPU in spinning (measured: 1.8 s vs 0.18 s of CPU per step).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train_and_save(target, progress)
    finally:
        torch.set_num_threads(threads)


def _train_and_save(target: Path, progress) -> None:
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Idefics3Config, Idefics3ForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(tiny_hf_model_dir())
    tok.add_special_tokens({"additional_special_tokens": IMAGE_TOKENS})
    tok.chat_template = CHAT_TEMPLATE
    processor = _processor(tok)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    config = Idefics3Config(
        text_config=dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=eos, pad_token_id=pad,
                         tie_word_embeddings=False, **TEXT),
        vision_config=VISION, scale_factor=SCALE_FACTOR, image_token_id=tok.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=False)
    config.dtype = "float32"
    model = Idefics3ForConditionalGeneration(config)
    batch = _examples(processor)
    labels = batch.pop("labels")
    # The vocabulary projection dominates the cost: apply it to the target positions only.
    predict = labels[:, 1:] != -100
    wanted = labels[:, 1:][predict]
    # The input embeddings stay random (frozen): the skill lives in the vision path and lm_head.
    model.model.text_model.embed_tokens.weight.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=TRAINING["learning_rate"])
    model.train()
    started = time.perf_counter()
    steps, loss = 0, torch.tensor(0.0)
    for steps in range(1, TRAINING["steps"] + 1):
        hidden = model.model(**batch).last_hidden_state[:, :-1]
        loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[predict]), wanted)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if progress and steps % 10 == 0:
            progress(f"  tiny VLM training: step {steps}, loss {loss.item():.4f}")
        if loss.item() < STOP_LOSS:
            break
    model.eval()
    with torch.no_grad():
        hidden = model.model(**batch).last_hidden_state[:, :-1]
        wrong = int((model.lm_head(hidden[predict]).argmax(-1) != wanted).sum())
    if wrong:
        raise RuntimeError(f"the tiny VLM did not learn its answers ({wrong} wrong tokens after {steps} steps, "
                           f"loss {loss.item():.4f}); raise TRAINING['steps'] and BUILD_VERSION")
    # top_k 1: vLLM takes its default sampling from generation_config.json, so the
    # colour is answered greedily even though the vision worker sends no temperature.
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=eos, pad_token_id=pad,
                                               do_sample=True, top_k=1)
    model.save_pretrained(target, safe_serialization=True)
    processor.save_pretrained(target)
    tc_path = target / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"   # portable for vLLM's own transformers
    tc["chat_template"] = CHAT_TEMPLATE
    tc_path.write_text(json.dumps(tc, indent=2, ensure_ascii=False))
    (target / "training.json").write_text(json.dumps(
        {"final_loss": float(loss.detach()), "steps": steps, "rows": int(labels.shape[0]),
         "train_seconds": round(time.perf_counter() - started, 1)}))


def tiny_vlm_dir(progress=print) -> Path:
    """The tiny VLM's folder (built and trained on first call, a minute or two on 2 busy
    cores; cached under .cache/)."""
    target = CACHE_DIR / f"tiny-idefics3-{_key()[:12]}"

    def build(out: Path) -> None:
        progress(f"building the tiny VLM into {target} (once)")
        out.mkdir()
        _build(out, progress)
        for path in out.iterdir():
            path.chmod(0o644)  # the vLLM server may run as another user
        out.chmod(0o755)

    return build_once(target, lambda path: (path / "training.json").is_file(), build)


if __name__ == "__main__":
    path = tiny_vlm_dir()
    print(path, (path / "training.json").read_text())
