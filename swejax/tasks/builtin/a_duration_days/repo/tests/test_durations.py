import pytest

from durations import format_duration, parse_duration


def test_parse_hours_minutes():
    assert parse_duration("1h30m") == 5400
    assert parse_duration("2h 5s") == 7205


def test_parse_invalid():
    with pytest.raises(ValueError):
        parse_duration("10 minutes")
    with pytest.raises(ValueError):
        parse_duration("")


def test_format():
    assert format_duration(0) == "0s"
    assert format_duration(3725) == "1h2m5s"


def test_roundtrip():
    for text in ["45s", "3m", "1h1m1s"]:
        assert format_duration(parse_duration(text)) == text
