"""Summaries of numeric CSV columns."""
import csv
import io


def read_column(text, column):
    """Return the non-blank values of ``column`` as floats."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or column not in reader.fieldnames:
        raise KeyError("no such column: %r" % column)
    values = []
    for row in reader:
        raw = (row.get(column) or "").strip()
        if raw:
            values.append(float(raw))
    return values


def summarize(values):
    """Return count, total, mean, min and max of a sequence of numbers.

    For an empty sequence ``count`` and ``total`` are 0 and the other fields
    are None.
    """
    values = list(values)
    total = sum(values)
    return {
        "count": len(values),
        "total": total,
        "mean": total / len(values),
        "min": min(values),
        "max": max(values),
    }


def summarize_csv(text, column):
    """Summarize one column of CSV text (first row is the header)."""
    return summarize(read_column(text, column))
