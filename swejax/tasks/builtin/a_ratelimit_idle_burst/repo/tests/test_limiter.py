import pytest

from ratelimit import FakeClock, RateLimiter, TokenBucket


def test_burst_then_deny():
    limiter = RateLimiter(capacity=3, rate=1, clock=FakeClock())
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]


def test_refill_over_time():
    clock = FakeClock()
    limiter = RateLimiter(capacity=2, rate=0.5, clock=clock)
    assert limiter.allow("a") and limiter.allow("a")
    clock.advance(2)
    assert limiter.allow("a")
    assert not limiter.allow("a")


def test_keys_are_independent():
    limiter = RateLimiter(capacity=1, rate=1, clock=FakeClock())
    assert limiter.allow("a")
    assert limiter.allow("b")
    assert not limiter.allow("a")


def test_invalid_bucket():
    with pytest.raises(ValueError):
        TokenBucket(0, 1, FakeClock())
