"""Image -> text through one interface: offline OCR, or a vision-language model server."""

from __future__ import annotations

import base64
import io
from typing import Any, Protocol

import httpx
import openai

from configs.schema import VisionConfig
from configs.contracts.errors import ModelUnavailable, TransientBackendError


class VisionBackend(Protocol):
    name: str

    def describe(self, image: bytes, instruction: str) -> str:
        """Text for the image: what it says (OCR) or what it shows (VLM)."""


class RapidOcrVision:
    """Offline OCR with RapidOCR's ONNX models (shipped inside the pip package)."""

    name = "rapidocr"

    def __init__(self, config: VisionConfig) -> None:
        self.config = config
        self._engine: Any = None

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from rapidocr_onnxruntime import RapidOCR

            self._engine = RapidOCR()
        return self._engine

    def describe(self, image: bytes, instruction: str) -> str:
        import numpy as np
        from PIL import Image

        with Image.open(io.BytesIO(image)) as img:
            pixels = np.array(img.convert("RGB"))
        lines, _ = self.engine(pixels)
        if not lines:
            return "(no text found in the image)"
        # Reading order: top to bottom, then left to right, by each box's top-left corner.
        ordered = sorted(lines, key=lambda item: (round(item[0][0][1] / 10), item[0][0][0]))
        return "\n".join(text for _, text, _ in ordered)


class OpenAICompatibleVision:
    """A vision-language model (e.g. Qwen2.5-VL on vLLM) through image_url content parts."""

    name = "openai"

    def __init__(self, config: VisionConfig) -> None:
        self.config = config
        key = config.api_key.get_secret_value() if config.api_key else "not-needed"
        self.client = openai.OpenAI(base_url=config.base_url, api_key=key, timeout=config.request_timeout_s,
                                    max_retries=0)

    def describe(self, image: bytes, instruction: str) -> str:
        url = "data:image/png;base64," + base64.b64encode(image).decode()
        try:
            reply = self.client.chat.completions.create(
                model=self.config.served_model or "vision", max_tokens=self.config.max_tokens,
                messages=[{"role": "user", "content": [
                    {"type": "text", "text": instruction or "Describe the image and transcribe any text."},
                    {"type": "image_url", "image_url": {"url": url}}]}])
        # APITimeoutError subclasses APIConnectionError: catch it first (a timeout is retried).
        except (openai.APITimeoutError, httpx.TimeoutException) as exc:
            raise TransientBackendError(f"vision server timed out after {self.config.request_timeout_s:g}s "
                                        f"(vision.request_timeout_s): {exc}") from exc
        except openai.APIConnectionError as exc:
            raise ModelUnavailable(f"vision server at {self.config.base_url} is unreachable: {exc}. "
                                   f"Fix: start it or correct vision.base_url.") from exc
        return reply.choices[0].message.content or ""
