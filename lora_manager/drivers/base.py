"""The interface every adapter driver implements.

A driver only moves adapters on and off one model server; which adapters should be
resident, and when to evict, is the residency manager's job (residency.py).
"""

from __future__ import annotations

from typing import Protocol

from lora_manager.registry import AdapterRecord


class AdapterDriver(Protocol):
    kind: str

    def load(self, record: AdapterRecord) -> None:
        """Make the adapter usable on the server (raise AdapterServerError if it cannot)."""

    def unload(self, name: str) -> None:
        """Free the adapter on the server (no error if it is not there)."""

    def server_resident(self) -> set[str] | None:
        """Adapters the server has right now, or None when only our bookkeeping knows
        (in-process llama.cpp cannot lose adapters behind our back)."""
