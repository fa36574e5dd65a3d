import pytest

from csvstats import read_column, summarize, summarize_csv

DATA = "name,price\napple,1.5\npear,\nplum,2.5\n"


def test_read_column_skips_blanks():
    assert read_column(DATA, "price") == [1.5, 2.5]


def test_unknown_column():
    with pytest.raises(KeyError):
        read_column(DATA, "weight")


def test_summarize_values():
    assert summarize([1, 2, 3, 6]) == {"count": 4, "total": 12, "mean": 3.0, "min": 1, "max": 6}


def test_summarize_csv():
    result = summarize_csv(DATA, "price")
    assert result["count"] == 2
    assert result["mean"] == 2.0
