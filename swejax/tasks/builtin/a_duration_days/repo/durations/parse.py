import re

from .units import UNIT_SECONDS

_TOKEN = re.compile(r"(\d+)([hms])")


def parse_duration(text):
    """Parse a duration like "1h30m" or "45s" and return seconds as an int."""
    compact = text.replace(" ", "").lower()
    if not compact:
        raise ValueError("empty duration")
    total = 0
    pos = 0
    for match in _TOKEN.finditer(compact):
        if match.start() != pos:
            break
        total += int(match.group(1)) * UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(compact):
        raise ValueError("invalid duration: %r" % text)
    return total
