import pytest

from stats import mean, median, mode, variance


def test_mean():
    assert mean([1, 2, 3, 4]) == 2.5


def test_median_odd():
    assert median([5, 1, 3]) == 3


def test_median_even_integer_result():
    assert median([1, 3, 5, 7]) == 4


def test_median_empty():
    with pytest.raises(ValueError):
        median([])


def test_mode():
    assert mode([1, 2, 2, 3, 3]) == 2


def test_variance():
    assert variance([2, 4, 4, 4, 5, 5, 7, 9]) == pytest.approx(4.571428, rel=1e-5)
