import pytest

from pq import PriorityQueue


def test_pops_lowest_priority_first():
    q = PriorityQueue()
    q.push("low", 5)
    q.push("urgent", 1)
    q.push("normal", 3)
    assert q.drain() == ["urgent", "normal", "low"]


def test_len_and_peek():
    q = PriorityQueue()
    assert not q
    q.push("x", 2)
    q.push("y", 1)
    assert len(q) == 2
    assert q.peek() == "y"
    assert len(q) == 2


def test_empty_errors():
    q = PriorityQueue()
    with pytest.raises(IndexError):
        q.pop()
    with pytest.raises(IndexError):
        q.peek()
