"""URL query-string helpers."""
from .query import build_query, get_first, parse_query

__all__ = ["build_query", "get_first", "parse_query"]
