"""Helpers shared by the tests: real tiny models and adapters, built once and cached."""
