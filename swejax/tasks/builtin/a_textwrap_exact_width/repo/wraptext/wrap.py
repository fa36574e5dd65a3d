"""Greedy word wrapping."""


def wrap(text, width=70):
    """Split text into lines of at most ``width`` characters.

    Words are separated by single spaces. A word longer than ``width`` is put
    on a line of its own rather than being broken.
    """
    if width < 1:
        raise ValueError("width must be at least 1")
    lines = []
    current = ""
    for word in text.split():
        if not current:
            current = word
        elif len(current) + 1 + len(word) < width:
            current += " " + word
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines


def fill(text, width=70):
    """Wrap text and return it as a single string with newlines."""
    return "\n".join(wrap(text, width))


def indent(text, prefix, width=70):
    """Wrap text so that each line, including ``prefix``, fits in ``width``."""
    inner = width - len(prefix)
    if inner < 1:
        raise ValueError("prefix is wider than width")
    return "\n".join(prefix + line for line in wrap(text, inner))
