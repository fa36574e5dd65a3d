import pytest

from semver import InvalidVersion, compare, parse


def test_parse_roundtrip():
    assert str(parse("1.2.3-rc.1+build.5")) == "1.2.3-rc.1+build.5"


def test_invalid_version():
    with pytest.raises(InvalidVersion):
        parse("1.2")


def test_numeric_ordering():
    assert compare("1.10.0", "1.9.0") == 1
    assert compare("2.0.0", "2.0.0") == 0


def test_prerelease_ordering():
    assert compare("1.0.0-alpha", "1.0.0-beta") == -1
    assert compare("1.0.0-alpha.2", "1.0.0-alpha.10") == -1
    assert compare("1.0.0-alpha", "1.0.0-alpha.1") == -1


def test_build_metadata_ignored():
    assert parse("1.0.0+a") == parse("1.0.0+b")
