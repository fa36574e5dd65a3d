"""Unit table shared by the parser and the formatter."""

# seconds per unit
UNIT_SECONDS = {
    "h": 3600,
    "m": 60,
    "s": 1,
}

# largest unit first; used when formatting
ORDER = ["h", "m", "s"]
