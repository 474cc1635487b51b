"""`appliance keys create|list|revoke`: API keys for n8n, Open WebUI and other clients.

Works directly on <data_dir>/api_keys.sqlite3 (the owner's machine, no API call):
the running API reads that file on every request, so a new key works and a revoked
key is refused at once, without a restart. The key itself is printed once and
never stored (only its SHA-256); lose it and create a new one.
"""

from __future__ import annotations

import json
import time
from typing import Optional

import typer

from configs.loader import ConfigError, load_settings
from configs.schema import Settings
from core_agent.stores.api_keys import ApiKeyError, ApiKeyInfo, ApiKeyStore, key_store_path

keys_app = typer.Typer(help="API keys for clients other than the owner (docs/security.md).", no_args_is_help=True)


def _fail(message: str, code: int = 1) -> None:
    typer.secho(message, fg="red", err=True)
    raise typer.Exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        _fail(str(exc), 2)
        raise  # unreachable: _fail exits


def _store(settings: Settings) -> ApiKeyStore:
    return ApiKeyStore(key_store_path(settings.data_dir))


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


@keys_app.command("create")
def create(name: str = typer.Argument(..., help="a name for the client, e.g. n8n or openwebui"),
           scope: Optional[str] = typer.Option(None, "--scope", "-s",
                                               help="a preset of configs/scopes.yaml (default: scopes.key_default)")) -> None:
    """Create a key and print it once."""
    settings = _settings()
    preset = scope or settings.scopes.key_default
    if preset not in settings.scopes.presets:
        _fail(f"scope '{preset}' is not a preset of configs/scopes.yaml; choose one of "
              f"{sorted(settings.scopes.presets)} (or add it there first)", 2)
    try:
        created = _store(settings).create(name, preset)
    except ApiKeyError as exc:
        _fail(str(exc), 2)
        return
    described = settings.scopes.presets[preset].description
    typer.secho(f"Created API key '{name}' with scope '{preset}'" + (f" ({described})" if described else ""),
                fg="green")
    typer.echo("The key is shown only now; store it in the client (it is kept here only as a hash):")
    typer.echo(created.key)
    typer.echo(f"Use it as 'Authorization: Bearer <key>' against {settings.api_url}/v1 "
               f"(no API restart needed).", err=True)


def _row(info: ApiKeyInfo) -> str:
    state = "active" if info.active else f"revoked {_when(info.revoked_at)}"
    return f"{info.name:<20} {info.hint + '…':<12} {info.scope:<12} {_when(info.created_at):<17} {state}"


@keys_app.command("list")
def list_keys(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Every key: name, first characters, scope, created, state."""
    keys = _store(_settings()).list()
    if as_json:
        typer.echo(json.dumps([k.model_dump() for k in keys], indent=2))
        return
    if not keys:
        typer.echo("No API keys yet. Create one: appliance keys create NAME --scope PRESET")
        return
    typer.echo(f"{'NAME':<20} {'KEY':<12} {'SCOPE':<12} {'CREATED':<17} STATE")
    for info in keys:
        typer.echo(_row(info))


@keys_app.command("revoke")
def revoke(name: str = typer.Argument(..., help="the key's name (see `appliance keys list`)")) -> None:
    """Revoke a key: the next request with it gets 401 (no API restart needed)."""
    try:
        info = _store(_settings()).revoke(name)
    except ApiKeyError as exc:
        _fail(str(exc), 1)
        return
    typer.secho(f"Revoked API key '{info.name}' ({info.hint}…); requests with it are refused from now on.",
                fg="green")
