"""Calendar events within a single day."""
from .timeparse import format_time, parse_time


class Event:
    def __init__(self, title, start, end):
        if end <= start:
            raise ValueError("event %r ends before it starts" % title)
        self.title = title
        self.start = start
        self.end = end

    @classmethod
    def from_strings(cls, title, start, end):
        return cls(title, parse_time(start), parse_time(end))

    def overlaps(self, other):
        return self.start < other.end and other.start < self.end

    def __repr__(self):
        return "Event(%r, %s-%s)" % (
            self.title, format_time(self.start), format_time(self.end)
        )
