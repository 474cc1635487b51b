"""Adapters on a vLLM server (started with --enable-lora and
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True).

load:   POST /v1/load_lora_adapter {lora_name, lora_path}; requests then name the
        adapter as `model`.
unload: POST /v1/unload_lora_adapter {lora_name}.
server_resident: GET /v1/models lists the base and every loaded adapter (adapters
        carry a `parent`); after a vLLM restart the list is empty of adapters, and the
        residency manager reloads what should be resident.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from lora_manager.errors import AdapterServerError
from lora_manager.registry import AdapterRecord, AdapterRegistry


class VllmAdapterDriver:
    kind = "vllm"

    def __init__(self, base_url: str, registry: AdapterRegistry, api_key: str | None = None,
                 server_dir: Path | None = None, timeout_s: float = 60.0) -> None:
        """`base_url` ends in /v1. `server_dir` is the adapters directory as the vLLM
        process sees it (a container mount), when that differs from ours."""
        self.base_url = base_url.rstrip("/")
        self.registry = registry
        self.server_dir = server_dir
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(timeout=timeout_s, headers=headers)

    def _lora_path(self, name: str) -> str:
        if self.server_dir is not None:
            return str(self.server_dir / name)
        return str(self.registry.path(name).resolve())

    def _post(self, endpoint: str, body: dict) -> httpx.Response:
        try:
            return self._http.post(f"{self.base_url}/{endpoint}", json=body)
        except httpx.HTTPError as exc:
            raise AdapterServerError(f"vLLM at {self.base_url} is not reachable ({exc}). Fix: start the model "
                                     f"server, or correct models.<name>.base_url.") from None

    def load(self, record: AdapterRecord) -> None:
        resp = self._post("load_lora_adapter", {"lora_name": record.name, "lora_path": self._lora_path(record.name)})
        if resp.status_code == 200 or "already been loaded" in resp.text:
            return
        hint = ("Fix: start vLLM with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
                if resp.status_code in (404, 405) else
                "Fix: check --max-lora-rank / --max-loras of the server and that it can read the adapter path")
        raise AdapterServerError(f"vLLM refused to load adapter '{record.name}' (HTTP {resp.status_code}: "
                                 f"{resp.text[:300]}). {hint}.")

    def unload(self, name: str) -> None:
        resp = self._post("unload_lora_adapter", {"lora_name": name})
        if resp.status_code not in (200, 400, 404):  # 400/404: it was not loaded, which is the goal
            raise AdapterServerError(f"vLLM could not unload adapter '{name}' (HTTP {resp.status_code}: "
                                     f"{resp.text[:300]})")

    def server_resident(self) -> set[str] | None:
        try:
            resp = self._http.get(f"{self.base_url}/models")
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            raise AdapterServerError(f"vLLM at {self.base_url} is not reachable ({exc}). Fix: start the model "
                                     f"server, or correct models.<name>.base_url.") from None
        return {m["id"] for m in resp.json().get("data", []) if m.get("parent")}

    def served_root(self) -> str | None:
        """Where the base model was loaded from (its folder holds config.json)."""
        resp = self._http.get(f"{self.base_url}/models")
        resp.raise_for_status()
        for model in resp.json().get("data", []):
            if not model.get("parent"):
                return model.get("root")
        return None

    def close(self) -> None:
        self._http.close()
