import pytest

from mdtable import column_widths, render_table


def test_basic_table():
    out = render_table(["name", "qty"], [["apple", 3], ["kiwi", 12]])
    assert out.splitlines() == [
        "| name  | qty |",
        "| ----- | --- |",
        "| apple | 3   |",
        "| kiwi  | 12  |",
    ]


def test_alignment():
    out = render_table(["name", "qty"], [["apple", 3]], align=["left", "right"])
    assert out.splitlines()[1] == "| :---- | --: |"
    assert out.splitlines()[2] == "| apple |   3 |"


def test_escaping_and_none():
    out = render_table(["a"], [["x|y"], [None]])
    assert out.splitlines()[2] == "| x\\|y |"
    assert out.splitlines()[3] == "|      |"


def test_row_length_mismatch():
    with pytest.raises(ValueError):
        render_table(["a", "b"], [[1]])
