"""Money helpers. Amounts are kept as integer cents internally."""


def to_cents(amount):
    """Convert an amount in currency units (int, float or str) to cents,
    rounding to the nearest cent (halves round up)."""
    if isinstance(amount, bool):
        raise TypeError("amount must be a number or numeric string")
    return int(float(amount) * 100)


def format_cents(cents):
    """Format integer cents as ``$1,234.56`` (``-$1.00`` for negatives)."""
    sign = "-" if cents < 0 else ""
    dollars, rest = divmod(abs(cents), 100)
    return "%s$%s.%02d" % (sign, "{:,}".format(dollars), rest)
