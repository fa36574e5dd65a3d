"""Layered configuration: defaults, files, environment overrides."""
from .merge import deep_merge, load
from .paths import get_path, set_path

__all__ = ["deep_merge", "get_path", "load", "set_path"]
