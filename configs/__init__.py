"""Configuration: the YAML files in this folder and their validated schema."""

from configs.loader import ConfigError, get_settings, load_settings
from configs.schema import Settings

__all__ = ["ConfigError", "Settings", "get_settings", "load_settings"]
