import pytest

from retrying import RetryError, retry


def flaky(failures, exc_type):
    state = {"calls": 0}

    def func():
        state["calls"] += 1
        if state["calls"] <= failures:
            raise exc_type("boom")
        return "ok"

    return func, state


def test_retries_until_success():
    func, state = flaky(2, KeyError)
    assert retry(exceptions=(KeyError,))(func)() == "ok"
    assert state["calls"] == 3


def test_gives_up_after_attempts():
    func, state = flaky(10, KeyError)
    with pytest.raises(RetryError) as info:
        retry(attempts=4, exceptions=(KeyError,))(func)()
    assert state["calls"] == 4
    assert isinstance(info.value.last, KeyError)


def test_backoff_delays():
    waits = []
    func, _ = flaky(3, KeyError)
    retry(attempts=5, delay=1.0, exceptions=(KeyError,), sleep=waits.append)(func)()
    assert waits == [1.0, 2.0, 4.0]


def test_other_exceptions_propagate():
    func, state = flaky(1, TypeError)
    with pytest.raises(TypeError):
        retry(exceptions=(KeyError,))(func)()
    assert state["calls"] == 1
