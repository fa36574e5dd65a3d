"""A one-day agenda: events, conflict detection and free slots."""
from .event import Event
from .scheduler import ConflictError, Scheduler
from .timeparse import format_time, parse_time

__all__ = ["ConflictError", "Event", "Scheduler", "format_time", "parse_time"]
