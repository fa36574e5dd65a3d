"""Keep a day's events free of conflicts."""
from .event import Event
from .timeparse import parse_time


class ConflictError(ValueError):
    """Raised when a new event overlaps an existing one."""


class Scheduler:
    def __init__(self):
        self._events = []

    def add(self, title, start, end):
        """Add an event given times as strings; returns the new Event."""
        event = Event.from_strings(title, start, end)
        for existing in self._events:
            if event.overlaps(existing):
                raise ConflictError(
                    "%r conflicts with %r" % (event.title, existing.title)
                )
        self._events.append(event)
        return event

    def agenda(self):
        """Titles of all events, earliest first."""
        return [e.title for e in sorted(self._events, key=lambda e: e.start)]

    def free_slots(self, day_start="00:00", day_end="23:59"):
        """List of (start, end) minute pairs not covered by any event."""
        cursor, limit = parse_time(day_start), parse_time(day_end)
        slots = []
        for event in sorted(self._events, key=lambda e: e.start):
            if event.start > cursor:
                slots.append((cursor, min(event.start, limit)))
            cursor = max(cursor, event.end)
        if cursor < limit:
            slots.append((cursor, limit))
        return slots
