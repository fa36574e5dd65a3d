import time


class MonotonicClock:
    def now(self):
        return time.monotonic()


class FakeClock:
    """A manually advanced clock for tests and simulations."""

    def __init__(self, start=0.0):
        self._now = float(start)

    def now(self):
        return self._now

    def advance(self, seconds):
        if seconds < 0:
            raise ValueError("cannot go back in time")
        self._now += seconds
