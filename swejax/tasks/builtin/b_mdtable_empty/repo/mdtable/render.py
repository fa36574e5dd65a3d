"""Render rows of data as a GitHub-flavoured Markdown table."""


def _cell(value):
    if value is None:
        return ""
    text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def column_widths(headers, rows):
    """Width of each column: the longest cell, header included (min 3)."""
    widths = []
    for i, header in enumerate(headers):
        longest = max(len(_cell(row[i])) for row in rows)
        widths.append(max(3, len(_cell(header)), longest))
    return widths


def _marker(align, width):
    if align == "left":
        return ":" + "-" * (width - 1)
    if align == "right":
        return "-" * (width - 1) + ":"
    if align == "center":
        return ":" + "-" * (width - 2) + ":"
    return "-" * width


def render_table(headers, rows, align=None):
    """Return the Markdown source of a table.

    ``align`` is an optional list with one of ``None``, ``"left"``,
    ``"right"`` or ``"center"`` per column.
    """
    headers = list(headers)
    rows = [list(row) for row in rows]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(
                "row has %d cells, expected %d" % (len(row), len(headers))
            )
    align = list(align) if align else [None] * len(headers)
    widths = column_widths(headers, rows)

    def line(cells):
        padded = []
        for value, width, how in zip(cells, widths, align):
            text = _cell(value)
            if how == "right":
                padded.append(text.rjust(width))
            elif how == "center":
                padded.append(text.center(width))
            else:
                padded.append(text.ljust(width))
        return "| " + " | ".join(padded) + " |"

    out = [line(headers)]
    markers = [_marker(a, w) for a, w in zip(align, widths)]
    out.append("| " + " | ".join(markers) + " |")
    for row in rows:
        out.append(line(row))
    return "\n".join(out)
