"""Roman numeral conversion (1..3999)."""

_NUMERALS = [
    (1000, "M"), (900, "CM"), (500, "D"), (400, "CD"),
    (100, "C"), (90, "XC"), (50, "L"), (40, "XL"),
    (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"),
]

_VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}


def to_roman(number):
    """Return the Roman numeral for ``number`` (1..3999)."""
    if isinstance(number, bool) or not isinstance(number, int):
        raise TypeError("expected an integer")
    if not 0 < number < 4000:
        raise ValueError("number out of range (1..3999)")
    parts = []
    for value, numeral in _NUMERALS:
        count, number = divmod(number, value)
        parts.append(numeral * count)
    return "".join(parts)


def from_roman(text):
    """Parse a Roman numeral (case-insensitive) and return its value."""
    if not isinstance(text, str):
        raise TypeError("expected a string")
    text = text.strip().upper()
    if not text:
        raise ValueError("empty numeral")
    for char in text:
        if char not in _VALUES:
            raise ValueError("invalid numeral character: %r" % char)
    total = 0
    for i, char in enumerate(text):
        value = _VALUES[char]
        following = _VALUES[text[i + 1]] if i + 1 < len(text) else 0
        if value <= following:
            total -= value
        else:
            total += value
    return total
