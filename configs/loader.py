"""Load `Settings` from the YAML files in configs/ plus `APPLIANCE_*` environment.

Order (later wins):
  1. configs/<name>.yaml for each name in BASE_FILES that exists,
  2. configs/appliance-<profile>.yaml (profile from APPLIANCE_PROFILE or the files),
  3. environment variables APPLIANCE_<KEY>[__<SUBKEY>...].

Errors are raised as ConfigError whose message names each bad key and where its
value came from (file or environment variable), so the owner knows what to edit.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import ValidationError

from configs.schema import Settings

ENV_PREFIX = "APPLIANCE_"
# Loader controls, not settings keys.
LOADER_ENV = {"APPLIANCE_CONFIG_DIR", "APPLIANCE_PRELOAD_MODELS"}
BASE_FILES = ("appliance", "models", "routes", "memory", "adapters", "webhooks", "traffic", "scopes")
DEFAULT_CONFIG_DIR = Path(__file__).resolve().parent


class ConfigError(Exception):
    """Configuration is invalid; the message lists every bad key and its source."""


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get("APPLIANCE_CONFIG_DIR") or DEFAULT_CONFIG_DIR)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], over: Mapping[str, Any], origin: dict[str, str],
           source: str, prefix: str = "") -> None:
    """Deep-merge `over` into `base`, recording which source set each leaf key."""
    for key, value in over.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value, origin, source, dotted + ".")
        else:
            base[key] = dict(value) if isinstance(value, Mapping) else value
            origin[dotted] = source


def _env_layer(environ: Mapping[str, str]) -> list[tuple[str, dict[str, Any]]]:
    layers = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name in LOADER_ENV:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX):].split("__") if part]
        if not path:
            continue
        value: Any = raw
        if raw[:1] in "[{":
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"environment {name}: looks like JSON but is not: {exc}") from exc
        nested: dict[str, Any] = {path[-1]: value}
        for part in reversed(path[:-1]):
            nested = {part: nested}
        layers.append((f"environment {name}", nested))
    return layers


def _source_of(loc: tuple[Any, ...], origin: dict[str, str]) -> str:
    parts = [str(p) for p in loc]
    for end in range(len(parts), 0, -1):
        hit = origin.get(".".join(parts[:end]))
        if hit:
            return hit
    return "defaults"


def _format_errors(exc: ValidationError, origin: dict[str, str]) -> str:
    lines = ["invalid configuration:"]
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if p not in ("function-after",))
        key = ".".join(str(p) for p in loc) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see configs/schema.py for the keys)"
        lines.append(f"  - key '{key}' (from {_source_of(loc, origin)}): {msg}")
    return "\n".join(lines)


def load_settings(environ: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build and validate Settings. `overrides` (tests, CLI flags) win over everything."""
    environ = os.environ if environ is None else environ
    folder = config_dir(environ)
    if not folder.is_dir():
        raise ConfigError(f"config folder {folder} does not exist (set APPLIANCE_CONFIG_DIR)")
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name in BASE_FILES:
        path = folder / f"{name}.yaml"
        if path.is_file():
            _merge(merged, _read_yaml(path), origin, str(path))

    env_layers = _env_layer(environ)
    profile = environ.get("APPLIANCE_PROFILE") or merged.get("profile") or "local"
    profile_file = folder / f"appliance-{profile}.yaml"
    if profile_file.is_file():
        _merge(merged, _read_yaml(profile_file), origin, str(profile_file))
    elif profile not in ("local", "gpu"):
        raise ConfigError(f"key 'profile': unknown profile '{profile}'; use 'local' or 'gpu'")
    for source, layer in env_layers:
        _merge(merged, layer, origin, source)
    if overrides:
        _merge(merged, overrides, origin, "overrides")

    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from None
    settings.data_dir = settings.data_dir.expanduser().resolve()
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, loaded once from the environment."""
    return load_settings()
