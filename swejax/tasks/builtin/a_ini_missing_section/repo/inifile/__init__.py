from .parser import Config, ConfigError, parse

__all__ = ["Config", "ConfigError", "parse"]
