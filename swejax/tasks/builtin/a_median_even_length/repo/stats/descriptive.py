"""Basic descriptive statistics for lists of numbers."""
from collections import Counter


def _require_data(values, what):
    data = list(values)
    if not data:
        raise ValueError("%s requires at least one value" % what)
    return data


def mean(values):
    data = _require_data(values, "mean")
    return sum(data) / len(data)


def median(values):
    """Middle value; for an even number of values, the mean of the two
    middle values."""
    data = sorted(_require_data(values, "median"))
    n = len(data)
    mid = n // 2
    if n % 2 == 1:
        return data[mid]
    return (data[mid - 1] + data[mid]) // 2


def mode(values):
    """Most common value; ties are broken by first occurrence."""
    data = _require_data(values, "mode")
    counts = Counter(data)
    best = max(counts.values())
    for value in data:
        if counts[value] == best:
            return value


def variance(values):
    """Sample variance (n - 1 in the denominator)."""
    data = _require_data(values, "variance")
    if len(data) < 2:
        raise ValueError("variance requires at least two values")
    m = mean(data)
    return sum((x - m) ** 2 for x in data) / (len(data) - 1)
