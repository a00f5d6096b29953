"""Configuration: KDL v2 text in, typed and immutable `Config` out (SPEC §2)."""

from sentinel.config.errors import ConfigError, ConfigIssue
from sentinel.config.loader import (
    DEFAULT_SOURCE,
    default_config_text,
    load_config_file,
    load_config_text,
    load_default_config,
    read_config_file,
)
from sentinel.config.model import Config

__all__ = [
    "DEFAULT_SOURCE",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "default_config_text",
    "load_config_file",
    "load_config_text",
    "load_default_config",
    "read_config_file",
]
