"""Adapter names and how a request names an adapter."""

from __future__ import annotations

import re

from lora_manager.errors import AdapterRefused

# Lower-case letters, digits, '-', '_' and '.'; starts with a letter or digit. No '/',
# no '..', no ':' (it separates base and adapter in "model": "<base>:<adapter>").
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
# "train": GET /adapters/train lists training jobs, so no adapter may be called that.
RESERVED = {"base", "none", "train"}


def check_name(name: str) -> str:
    """Return `name` if it is safe as a folder and model name, else raise AdapterRefused."""
    if not NAME_RE.match(name or "") or ".." in name or name in RESERVED:
        raise AdapterRefused(
            f"adapter name {name!r} is not allowed. Fix: use 1-63 lower-case letters, digits, "
            f"'-', '_' or '.', starting with a letter or digit, without '..' (and not "
            f"{sorted(RESERVED)}), e.g. 'sport-worldview'.")
    return name


def split_model(model: str) -> tuple[str, str | None]:
    """"core:sport" -> ("core", "sport"); "core" -> ("core", None)."""
    base, sep, adapter = model.partition(":")
    return (base, adapter or None) if sep else (model, None)
