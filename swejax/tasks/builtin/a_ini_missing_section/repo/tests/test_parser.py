import pytest

from inifile import ConfigError, parse

TEXT = """
# sample
[server]
host = example.org
port = 8080
debug = yes

[paths]
root = /srv
"""


def test_sections():
    assert parse(TEXT).sections() == ["server", "paths"]


def test_get_and_types():
    cfg = parse(TEXT)
    assert cfg.get("server", "host") == "example.org"
    assert cfg.getint("server", "port") == 8080
    assert cfg.getbool("server", "debug") is True


def test_missing_key():
    cfg = parse(TEXT)
    assert cfg.get("server", "user", "nobody") == "nobody"
    with pytest.raises(ConfigError):
        cfg.get("server", "user")


def test_malformed_line():
    with pytest.raises(ConfigError):
        parse("[a]\njust text\n")


def test_bad_integer():
    with pytest.raises(ConfigError):
        parse("[a]\nn = ten\n").getint("a", "n")
