"""Images sent with requests: decode data URLs and refuse what is not a sane image."""

from __future__ import annotations

import base64
import binascii
import io
import re

from PIL import Image, UnidentifiedImageError

from configs.contracts.errors import BackendError

DATA_URL = re.compile(r"^data:(?P<mime>image/[A-Za-z0-9.+-]+)?(?P<b64>;base64)?,(?P<data>.*)$", re.DOTALL)


class BadImage(BackendError):
    code = "bad_image"
    status = 400


class ImageTooLarge(BadImage):
    code = "image_too_large"
    status = 413


def decode_data_url(url: str, max_bytes: int, max_pixels: int) -> bytes:
    """The image bytes of a data URL, after checking it really is a bounded image."""
    match = DATA_URL.match(url.strip())
    if not match or not match.group("b64"):
        raise BadImage("images must be sent as base64 data URLs (data:image/png;base64,...); "
                       "remote image URLs are not fetched")
    if len(match.group("data")) * 3 // 4 > max_bytes:
        raise ImageTooLarge(f"image is larger than {max_bytes} bytes (vision.max_image_bytes)")
    try:
        raw = base64.b64decode(match.group("data"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadImage(f"image data URL is not valid base64: {exc}") from exc
    if len(raw) > max_bytes:
        raise ImageTooLarge(f"image is larger than {max_bytes} bytes (vision.max_image_bytes)")
    check_image(raw, max_pixels)
    return raw


def check_image(raw: bytes, max_pixels: int) -> tuple[int, int]:
    """The image's size, read from its header; the pixels are never decoded here. A
    few-KB PNG can declare 20000x20000 pixels (1.2 GB once decoded): refused by size."""
    try:
        with Image.open(io.BytesIO(raw)) as img:
            size = img.size
            if size[0] * size[1] > max_pixels:
                raise ImageTooLarge(f"image has {size[0]}x{size[1]} pixels, more than {max_pixels} "
                                    f"(vision.max_pixels)")
            img.verify()
    except Image.DecompressionBombError as exc:
        # PIL's own guard (over twice Image.MAX_IMAGE_PIXELS) fires inside open(), before ours.
        raise ImageTooLarge(f"image declares too many pixels ({exc}); the limit is {max_pixels} "
                            f"(vision.max_pixels). Send a smaller image.") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise BadImage(f"the attachment is not a readable image: {exc}. Send a PNG, JPEG, WebP or GIF.") from exc
    return size
