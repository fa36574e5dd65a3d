import pytest

from roman import from_roman, to_roman


def test_to_roman_basic():
    assert to_roman(1) == "I"
    assert to_roman(4) == "IV"
    assert to_roman(1994) == "MCMXCIV"
    assert to_roman(3999) == "MMMCMXCIX"


def test_to_roman_range():
    with pytest.raises(ValueError):
        to_roman(0)
    with pytest.raises(TypeError):
        to_roman(2.0)


def test_from_roman_subtractive():
    assert from_roman("IV") == 4
    assert from_roman("ix") == 9
    assert from_roman("MCMXCIV") == 1994


def test_from_roman_invalid():
    with pytest.raises(ValueError):
        from_roman("ABC")
    with pytest.raises(ValueError):
        from_roman("  ")
