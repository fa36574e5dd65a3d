from qs import build_query, get_first, parse_query


def test_parse_basic():
    params = parse_query("?name=Ada&lang=py")
    assert params["name"] == ["Ada"]
    assert params["lang"] == ["py"]


def test_plus_and_percent_decoding():
    params = parse_query("q=hello+world&path=%2Fhome")
    assert get_first(params, "q") == "hello world"
    assert get_first(params, "path") == "/home"


def test_repeated_and_blank():
    params = parse_query("tag=x&tag=y&flag&&")
    assert params["tag"] == ["x", "y"]
    assert params["flag"] == [""]


def test_get_first_default():
    assert get_first({}, "missing", "d") == "d"


def test_build_query():
    assert build_query({"b": ["1", "2"], "a": "x y"}) == "a=x+y&b=1&b=2"
