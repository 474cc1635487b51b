"""Named API keys for clients other than the owner (n8n, Open WebUI): <data_dir>/api_keys.sqlite3.

A key is 32 random bytes (`apk_` + urlsafe base64), shown once when it is created.
Only its SHA-256 is stored: a key has 256 bits of entropy, so a plain fast hash is
enough (no dictionary to attack; a slow KDF would only slow every request) and the
file is useless to whoever copies it. Lookup is by hash (indexed), then compared
again with hmac.compare_digest.

The API reads this file on every request, so `appliance keys create/revoke` take
effect at once, without restarting the API. A revoked key stays in the file (with
its revocation time) so `keys list` shows what happened; its name may be reused.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from configs.sqlite_file import SqliteFile

KEY_PREFIX = "apk_"
KEY_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT PRIMARY KEY,
    key_sha256 TEXT NOT NULL UNIQUE,
    hint TEXT NOT NULL,              -- the first characters, so the owner can tell keys apart
    scope TEXT NOT NULL,             -- a preset of configs/scopes.yaml
    created_at REAL NOT NULL,
    revoked_at REAL
);
"""


class ApiKeyError(Exception):
    """A key operation the owner asked for that cannot be done; the message says why and what to do."""


class ApiKeyInfo(BaseModel):
    name: str
    hint: str
    scope: str
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class CreatedKey(BaseModel):
    info: ApiKeyInfo
    key: str                      # the only time the key itself exists outside the client


class KeyMatch(BaseModel):
    """What a presented token turned out to be."""

    status: Literal["active", "revoked"]
    info: ApiKeyInfo


def key_store_path(data_dir: Path) -> Path:
    return data_dir / "api_keys.sqlite3"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def looks_like_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


class ApiKeyStore(SqliteFile):
    def __init__(self, path: Path) -> None:
        super().__init__(path, SCHEMA)

    def create(self, name: str, scope: str) -> CreatedKey:
        if not KEY_NAME_RE.match(name):
            raise ApiKeyError(f"key name '{name}' must be 1-64 lowercase letters, digits, _ or - "
                              f"(it appears in the key's conversations as key:<name>)")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        info = ApiKeyInfo(name=name, hint=key[:len(KEY_PREFIX) + 4], scope=scope, created_at=time.time())
        with self._connect() as db:
            row = db.execute("SELECT revoked_at FROM api_keys WHERE name = ?", (name,)).fetchone()
            if row is not None and row["revoked_at"] is None:
                raise ApiKeyError(f"a key named '{name}' already exists. Revoke it first "
                                  f"(`appliance keys revoke {name}`) or choose another name")
            db.execute("DELETE FROM api_keys WHERE name = ?", (name,))
            db.execute("INSERT INTO api_keys(name, key_sha256, hint, scope, created_at) VALUES (?,?,?,?,?)",
                       (name, _digest(key), info.hint, scope, info.created_at))
        return CreatedKey(info=info, key=key)

    def list(self) -> list[ApiKeyInfo]:
        with self._connect() as db:
            rows = db.execute("SELECT name, hint, scope, created_at, revoked_at FROM api_keys "
                              "ORDER BY name").fetchall()
        return [ApiKeyInfo(**dict(r)) for r in rows]

    def revoke(self, name: str) -> ApiKeyInfo:
        with self._connect() as db:
            cur = db.execute("UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                             (time.time(), name))
            row = db.execute("SELECT name, hint, scope, created_at, revoked_at FROM api_keys WHERE name = ?",
                             (name,)).fetchone()
        if row is None:
            raise ApiKeyError(f"there is no key named '{name}' (`appliance keys list` shows them)")
        if cur.rowcount == 0:
            raise ApiKeyError(f"key '{name}' was already revoked")
        return ApiKeyInfo(**dict(row))

    def find(self, token: str) -> KeyMatch | None:
        """The key this token is (active or revoked), or None if it is no key of ours."""
        if not looks_like_key(token):
            return None
        digest = _digest(token)
        with self._connect() as db:
            row = db.execute("SELECT name, key_sha256, hint, scope, created_at, revoked_at FROM api_keys "
                             "WHERE key_sha256 = ?", (digest,)).fetchone()
        if row is None or not hmac.compare_digest(row["key_sha256"], digest):
            return None
        data = dict(row)
        data.pop("key_sha256")
        info = ApiKeyInfo(**data)
        return KeyMatch(status="active" if info.active else "revoked", info=info)
