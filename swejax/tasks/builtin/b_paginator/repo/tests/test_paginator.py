import pytest

from pager import PageOutOfRange, Paginator


def test_num_pages():
    assert Paginator(range(25), per_page=10).num_pages == 3
    assert Paginator(range(20), per_page=10).num_pages == 2
    assert Paginator([], per_page=10).num_pages == 1


def test_page_range():
    assert list(Paginator(range(7), per_page=3).page_range()) == [1, 2, 3]


def test_out_of_range():
    p = Paginator(range(5), per_page=2)
    with pytest.raises(PageOutOfRange):
        p.page(0)
    with pytest.raises(PageOutOfRange):
        p.page(4)
    with pytest.raises(TypeError):
        p.page("1")


def test_has_next_previous():
    p = Paginator(range(5), per_page=2)
    assert p.has_next(1) and not p.has_previous(1)
    assert p.has_previous(3) and not p.has_next(3)
