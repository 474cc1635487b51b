"""Operating the appliance (not on the request path): launcher, CLI, backup, VRAM planner."""
