import pytest

from confmerge import deep_merge, get_path, load, set_path


def test_merge_nested():
    base = {"db": {"host": "localhost", "port": 5432}, "debug": False}
    out = deep_merge(base, {"db": {"port": 6543}})
    assert out == {"db": {"host": "localhost", "port": 6543}, "debug": False}


def test_load_layers_in_order():
    cfg = load({"a": 1, "b": 1}, {"b": 2}, None, {"b": 3, "c": 3})
    assert cfg == {"a": 1, "b": 3, "c": 3}
    with pytest.raises(TypeError):
        load({}, ["not", "a", "dict"])


def test_get_path():
    cfg = {"db": {"pool": {"size": 5}}}
    assert get_path(cfg, "db.pool.size") == 5
    assert get_path(cfg, "db.missing", None) is None
    with pytest.raises(KeyError):
        get_path(cfg, "nope")


def test_set_path_creates_intermediate():
    cfg = {}
    set_path(cfg, "log.handlers.file", "/tmp/x.log")
    assert cfg == {"log": {"handlers": {"file": "/tmp/x.log"}}}
