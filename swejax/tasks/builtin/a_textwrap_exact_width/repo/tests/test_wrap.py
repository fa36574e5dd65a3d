import pytest

from wraptext import fill, indent, wrap


def test_short_text_single_line():
    assert wrap("hello world", 40) == ["hello world"]


def test_wraps_words():
    assert wrap("the quick brown fox", 10) == ["the quick", "brown fox"]


def test_long_word_on_its_own_line():
    assert wrap("a supercalifragilistic b", 5) == ["a", "supercalifragilistic", "b"]


def test_empty_text():
    assert wrap("   ", 10) == []


def test_invalid_width():
    with pytest.raises(ValueError):
        wrap("abc", 0)


def test_fill_joins_lines():
    assert fill("the quick brown fox", 10) == "the quick\nbrown fox"
