"""HTTP layer of the core: routers, protocol models, auth."""
