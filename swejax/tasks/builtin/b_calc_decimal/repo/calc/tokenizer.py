"""Split arithmetic expressions into tokens."""
import re
from collections import namedtuple

Token = namedtuple("Token", "kind value pos")

_NUMBER_RE = re.compile(r"\d+")
_OPERATORS = "+-*/()"


def tokenize(text):
    """Return the list of tokens in ``text``, ending with an EOF token.

    Numbers are returned as ``NUMBER`` tokens holding their source text.
    """
    tokens = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char.isspace():
            pos += 1
            continue
        match = _NUMBER_RE.match(text, pos)
        if match:
            tokens.append(Token("NUMBER", match.group(), pos))
            pos = match.end()
            continue
        if char in _OPERATORS:
            tokens.append(Token("OP", char, pos))
            pos += 1
            continue
        raise SyntaxError("unexpected character %r at position %d" % (char, pos))
    tokens.append(Token("EOF", "", pos))
    return tokens
