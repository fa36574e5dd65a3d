"""The modes of `python -m swejax.main`, one module each: what the mode takes on the command
line (`add_arguments`), and what it does with a resolved config (`run`, returning the exit
code). `swejax.main` parses and dispatches; nothing here parses argv."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value
