from .version import InvalidVersion, Version, compare, parse

__all__ = ["InvalidVersion", "Version", "compare", "parse"]
