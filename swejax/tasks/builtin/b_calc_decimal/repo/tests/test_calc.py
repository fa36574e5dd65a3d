import pytest

from calc import evaluate, parse, tokenize


def test_precedence():
    assert evaluate("2 + 3 * 4") == 14
    assert evaluate("(2 + 3) * 4") == 20
    assert evaluate("7 / 2") == 3.5


def test_unary_minus():
    assert evaluate("-3 + 5") == 2
    assert evaluate("-(2 * 3)") == -6


def test_parse_tree():
    assert parse("1 + 2 * 3") == ("+", 1, ("*", 2, 3))


def test_tokenize_positions():
    tokens = tokenize("12 + (3)")
    assert [(t.kind, t.value, t.pos) for t in tokens] == [
        ("NUMBER", "12", 0), ("OP", "+", 3), ("OP", "(", 5),
        ("NUMBER", "3", 6), ("OP", ")", 7), ("EOF", "", 8),
    ]


def test_syntax_errors():
    with pytest.raises(SyntaxError):
        evaluate("2 $ 3")
    with pytest.raises(SyntaxError):
        evaluate("(1 + 2")
    with pytest.raises(SyntaxError):
        evaluate("1 2")
