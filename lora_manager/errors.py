"""Adapter errors. They are BackendErrors, so workers and the API report them the same
way as model errors: an owner-facing message (problem and fix) and an HTTP status."""

from __future__ import annotations

from configs.contracts.errors import BackendError


class AdapterError(BackendError):
    code = "adapter_error"
    status = 500


class AdapterRefused(AdapterError):
    """The adapter failed validation; nothing was registered."""

    code = "adapter_invalid"
    status = 400


class AdapterNotFound(AdapterError):
    code = "adapter_not_found"
    status = 404


class AdapterExists(AdapterError):
    code = "adapter_exists"
    status = 409


class AdapterForbidden(AdapterError):
    """The policy does not let this request source or task kind use the adapter."""

    code = "adapter_forbidden"
    status = 403


class AdapterCapacity(AdapterError):
    """No adapter slot can be freed (all resident adapters pinned or in use)."""

    code = "adapter_capacity"
    status = 503


class AdapterServerError(AdapterError):
    """The model server did not load or unload an adapter."""

    code = "adapter_server_error"
    status = 503
