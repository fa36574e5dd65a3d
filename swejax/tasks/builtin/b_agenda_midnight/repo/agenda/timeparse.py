"""Parse and format times of day as minutes since midnight."""
import re

_TIME_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*([ap]m)?\s*$", re.IGNORECASE)


def parse_time(text):
    """Parse ``"14:05"`` or ``"2:05 pm"`` into minutes since midnight."""
    match = _TIME_RE.match(text)
    if not match:
        raise ValueError("invalid time: %r" % text)
    hour, minute = int(match.group(1)), int(match.group(2))
    suffix = (match.group(3) or "").lower()
    if minute > 59:
        raise ValueError("invalid minute in %r" % text)
    if suffix:
        if not 1 <= hour <= 12:
            raise ValueError("invalid 12-hour time: %r" % text)
        if suffix == "pm" and hour != 12:
            hour += 12
    elif hour > 23:
        raise ValueError("invalid hour in %r" % text)
    return hour * 60 + minute


def format_time(minutes):
    """Format minutes since midnight as ``HH:MM``."""
    return "%02d:%02d" % divmod(minutes, 60)
