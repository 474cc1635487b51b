"""HMAC-SHA256 request signing shared by incoming webhooks and outgoing callbacks.

The signed bytes are `<unix timestamp>.` followed by the raw body, so a signature is
bound to one moment and one body: a receiver refuses old timestamps and signatures
it has already seen. Headers:

    X-Appliance-Timestamp: 1767000000
    X-Appliance-Signature: sha256=<hex HMAC-SHA256(secret, "1767000000." + body)>
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Appliance-Timestamp"
SIGNATURE_HEADER = "X-Appliance-Signature"
SCHEME = "sha256="


class SignatureError(Exception):
    """The signature headers are missing, stale or wrong; the message says which."""


def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return SCHEME + digest


def signed_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """Headers that authenticate `body` now (for callbacks, tests and client examples)."""
    ts = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: signature(secret, ts, body)}


def verify(secret: str, timestamp: str | None, given: str | None, body: bytes, window_s: int,
           now: float | None = None) -> str:
    """Check the headers against `body`; return the normalised signature (for replay checks)."""
    if not timestamp or not given:
        raise SignatureError(
            f"missing {TIMESTAMP_HEADER} and/or {SIGNATURE_HEADER} headers. Sign the request: "
            f"{SIGNATURE_HEADER}: sha256=HMAC_SHA256(secret, '<timestamp>.' + raw body), "
            f"or send the hook's bearer token (see docs/n8n.md)")
    try:
        ts = int(timestamp.strip())
    except ValueError:
        raise SignatureError(f"{TIMESTAMP_HEADER} must be Unix time in whole seconds, got {timestamp[:40]!r}") from None
    skew = int(time.time() if now is None else now) - ts
    if abs(skew) > window_s:
        when = f"{skew} s old" if skew > 0 else f"{-skew} s in the future"
        raise SignatureError(f"the signed timestamp is {when}; requests must be signed within {window_s} s "
                             f"of the server's clock. Sign each request when you send it (and check the clock)")
    normalised = given.strip().lower()
    if not normalised.startswith(SCHEME):
        normalised = SCHEME + normalised
    if not hmac.compare_digest(normalised, signature(secret, ts, body)):
        raise SignatureError("the signature does not match the body. Sign the exact bytes you send, "
                             "as '<timestamp>.' + body, with the hook's secret")
    return normalised
