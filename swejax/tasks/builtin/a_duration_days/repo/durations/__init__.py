"""Parse and format compact durations such as "2d4h30m" or "90s".

Supported units: d (days), h (hours), m (minutes), s (seconds).
"""
from .format import format_duration
from .parse import parse_duration

__all__ = ["format_duration", "parse_duration"]
