"""The core: front door (API) and mind (planning, dispatch, memory)."""
