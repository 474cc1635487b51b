"""The vision-language backend end to end on vLLM's CPU build: an image sent to OUR API
with the official `openai` client goes API -> vision queue -> vision worker ->
vLLM -> answer, as on the GPU stack (configs/appliance-gpu.yaml: vision.backend
openai on vllm-vision).

The model is a tiny VLM built and trained at test time (bench/harness/tiny_vlm.py):
Idefics3 (SmolVLM's architecture), taught to name the colour that fills an image.
The production family (Qwen2-VL / Qwen2.5-VL) cannot start on vLLM 0.32 CPU here:
its model module imports a transformers image processor that needs torchvision, which
has no CPU wheel for torch 2.13.0+cpu (the server exits with "Model architectures
['Qwen2VLForConditionalGeneration'] failed to be inspected ... No module named
'torchvision'"; LLaVA, LLaVA-NeXT, Qwen3-VL and Gemma 3 likewise). docs/models.md.

What a tiny model can honestly show, and what is asserted:
- the pixels reached the model: a red image is answered "red", a blue one "blue"
  (a text-only model, or an image lost on the way, cannot tell them apart);
- the image travelled as image tokens: vLLM's own prompt-token counter grows by the
  text prompt plus exactly the image's token count worked out by hand below;
- through our API the answer streams back, the task record shows the vision step
  done by the VLM with the colour in its result;
- bad images are refused by our API with a clear error before anything is queued
  (vLLM's request counter does not move).

Found by this test: a streamed request with an image got an empty answer. image_plan's
second step is named "answer", and the final answer ran under the same Celery id
(`<task>.answer`), so the API followed the step's event stream (no tokens) instead of
the answer's; the turn's own calls now use `<task>:answer` / `<task>:plan` (':' is not
allowed in a step id).

Broken builds this catches: the vision backend sending the instruction without the
image part (tried) -> the colours and the token count fail; the API dropping image
parts (routes_openai._attachments returning no attachments) -> the task is not
routed "images attached" and has no vision step.
"""

from __future__ import annotations

import base64
import re
from typing import Iterator

import httpx
import openai
import pytest

from bench.harness.tiny_vlm import (
    SERVED_NAME,
    TILE_TOKENS,
    answer_for,
    data_url,
    png,
    tiny_vlm_dir,
)
from bench.harness.vllm_cpu import VllmServer, vllm_unavailable_reason
from configs.schema import VisionConfig
from core_agent.orchestration.plans import image_plan
from tests.conftest import Stack, running_stack, stack_env
from workers.backends.vision import OpenAICompatibleVision

pytestmark = pytest.mark.vllm

# Our vision worker's instruction for a request with images (plans.image_plan).
INSTRUCTION = image_plan("q").steps[0].instruction
MAX_IMAGE_BYTES = 64 * 1024

# A square image is resized to 112x112 and cut into 2x2 tiles of 56x56 plus one 56x56
# global view; each tile is (56/14)^2 = 16 patches, pixel-shuffled 2x2 -> 4 <image>
# tokens (TILE_TOKENS). The processor writes, per tile,
#   <fake_token_around_image><row_R_col_C><image>x4           = 6 tokens, x4 tiles = 24
# a "\n" after each row (2), then "\n<fake_token_around_image><global-img><image>x4
# <fake_token_around_image>" = 1 + 1 + 1 + 4 + 1 = 8; SmolLM2's tokenizer merges the
# second row's "\n" with the global view's "\n" into one "\n\n" token (-1).
# 24 + 2 + 8 - 1 = 33 tokens, of which 5 x 4 = 20 are image tokens.
SQUARE_IMAGE_PROMPT_TOKENS = 33
assert 5 * TILE_TOKENS == 20


def _metric(server: VllmServer, name: str) -> float:
    """A counter from vLLM's own Prometheus endpoint (summed over its label sets)."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    values = [float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)]
    assert values, f"vLLM exports no {name}"
    return sum(values)


@pytest.fixture(scope="module")
def vlm_server() -> Iterator[VllmServer]:
    reason = vllm_unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = VllmServer(model_dir=tiny_vlm_dir(), served_name=SERVED_NAME,
                        extra_args=("--max-model-len", "256", "--limit-mm-per-prompt", '{"image": 1}'),
                        extra_env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    with server:
        yield server


@pytest.fixture(scope="module")
def vlm_stack(vlm_server: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    overrides = stack_env(tmp_path_factory.mktemp("vision-stack"))
    overrides.update({"APPLIANCE_VISION__BACKEND": "openai", "APPLIANCE_VISION__BASE_URL": vlm_server.base_url,
                      "APPLIANCE_VISION__SERVED_MODEL": SERVED_NAME, "APPLIANCE_VISION__MAX_TOKENS": "12",
                      "APPLIANCE_VISION__MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES)})
    with running_stack(overrides) as running:
        yield running


def _ask_vllm(server: VllmServer, image: bytes | None) -> openai.types.chat.ChatCompletion:
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=300)
    content: list[dict] = [{"type": "text", "text": INSTRUCTION}]
    if image is not None:
        content.append({"type": "image_url", "image_url": {"url": data_url(image)}})
    return client.chat.completions.create(model=SERVED_NAME, max_tokens=12,
                                          messages=[{"role": "user", "content": content}])


def test_the_served_vlm_sees_the_pixels_and_counts_the_image_tokens(vlm_server: VllmServer) -> None:
    """Direct to vLLM: the colour comes from the pixels; the image adds exactly its tokens."""
    text_only = _ask_vllm(vlm_server, None)
    red = _ask_vllm(vlm_server, png("red", 112, noise=10, seed=101))
    blue = _ask_vllm(vlm_server, png("blue", 96, noise=10, seed=102))   # resized up to 112: same layout
    assert red.choices[0].message.content == answer_for("red")
    assert blue.choices[0].message.content == answer_for("blue")
    assert red.usage.prompt_tokens - text_only.usage.prompt_tokens == SQUARE_IMAGE_PROMPT_TOKENS
    assert blue.usage.prompt_tokens == red.usage.prompt_tokens


def test_our_backend_class_reads_the_colour(vlm_server: VllmServer) -> None:
    """The vision worker's backend (what vision.backend=openai selects) against the real server."""
    backend = OpenAICompatibleVision(VisionConfig(backend="openai", base_url=vlm_server.base_url,
                                                  served_model=SERVED_NAME, max_tokens=12))
    # Two colours: an image dropped on the way gives the same answer for both.
    assert backend.describe(png("green", 112, seed=103), INSTRUCTION) == answer_for("green")
    assert backend.describe(png("blue", 112, seed=106), INSTRUCTION) == answer_for("blue")


def test_an_image_goes_api_vision_worker_vllm_and_the_answer_streams_back(
        vlm_stack: Stack, vlm_server: VllmServer) -> None:
    text_only_tokens = _ask_vllm(vlm_server, None).usage.prompt_tokens
    requests_before = _metric(vlm_server, "vllm:request_success_total")
    prompt_before = _metric(vlm_server, "vllm:prompt_tokens_total")

    client = vlm_stack.openai()
    with client.chat.completions.with_streaming_response.create(
            model="core", stream=True, max_tokens=24, temperature=0,
            messages=[{"role": "user", "content": [
                {"type": "text", "text": "What colour is this picture?"},
                {"type": "image_url", "image_url": {"url": data_url(png("red", 112, noise=10, seed=104))}}]}],
    ) as response:
        task_id = response.headers["X-Task-Id"]
        chunks = [chunk for chunk in response.parse()]
    with vlm_stack.http() as http:
        record = http.get(f"/tasks/{task_id}").json()
    assert (record["status"], record["route_reason"]) == ("succeeded", "images attached"), record
    steps = {s["id"]: s for s in record["steps"]}
    read = steps["read"]
    assert (read["worker"], read["queue"], read["state"], read["model"]) == ("vision", "vision", "succeeded",
                                                                            "openai"), read
    assert answer_for("red") in read["result_summary"], read
    assert steps["answer"]["state"] == "succeeded", steps["answer"]

    # Exactly one request reached vLLM, carrying the instruction and the image's tokens.
    assert _metric(vlm_server, "vllm:request_success_total") - requests_before == 1
    assert (_metric(vlm_server, "vllm:prompt_tokens_total") - prompt_before
            == text_only_tokens + SQUARE_IMAGE_PROMPT_TOKENS)

    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces).strip(), f"the composed answer streamed back empty: {chunks}"
    assert len(pieces) >= 2, f"the answer arrived in one piece, not streamed: {pieces}"


def _post(stack: Stack, url: str) -> httpx.Response:
    with stack.http() as http:
        return http.post("/v1/chat/completions", json={"model": "core", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]}]})


@pytest.mark.parametrize(("url", "status", "code", "says"), [
    # Labelled PNG, but the bytes are text.
    ("data:image/png;base64," + base64.b64encode(b"just some text, not pixels").decode(), 400, "bad_image",
     "not a readable image"),
    ("https://example.com/cat.png", 400, "bad_image", "remote image URLs are not fetched"),
    # Noise does not compress: a 200x200 noisy PNG is ~120 KB, over the 64 KiB limit.
    (data_url(png("red", 200, noise=120, seed=105)), 413, "image_too_large", "vision.max_image_bytes"),
])
def test_bad_images_are_refused_clearly_before_reaching_the_model(
        vlm_stack: Stack, vlm_server: VllmServer, url: str, status: int, code: str, says: str) -> None:
    requests_before = _metric(vlm_server, "vllm:request_success_total")
    response = _post(vlm_stack, url)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and says in error["message"], error
    assert _metric(vlm_server, "vllm:request_success_total") == requests_before
