from slugs import slugify, unique_slug


def test_basic():
    assert slugify("Hello World") == "hello-world"


def test_accents_removed():
    assert slugify("Crème Brûlée") == "creme-brulee"


def test_custom_separator():
    assert slugify("a b  c", separator="_") == "a_b_c"


def test_max_length():
    assert slugify("hello world foo", max_length=11) == "hello-world"


def test_unique_slug():
    assert unique_slug("My Post", {"my-post", "my-post-2"}) == "my-post-3"
