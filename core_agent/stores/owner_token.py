"""The owner's API token: from APPLIANCE_API_KEY, or generated once into the data dir."""

from __future__ import annotations

import os
import secrets

from configs.schema import Settings


def ensure_owner_token(settings: Settings) -> str:
    """Return the owner token, creating <data_dir>/owner.token (mode 0600) on first start."""
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    path = settings.token_file
    if path.is_file():
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_suffix(".tmp")
    # Created with 0600 from the start (not chmod after) so the token is never readable by others.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    os.replace(tmp, path)
    return token
