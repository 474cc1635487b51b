"""The shared contracts: what travels between packages (task payloads, stream events,
memory requests) and the errors every layer reports the same way.

This is the bottom of the house: every package may import it, and it imports none of
them (only pydantic). See docs/architecture.md for the layering.
"""
