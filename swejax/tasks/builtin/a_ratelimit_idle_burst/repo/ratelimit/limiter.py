from .bucket import TokenBucket
from .clock import MonotonicClock


class RateLimiter:
    """Allow bursts of up to ``capacity`` requests per key, sustained at
    ``rate`` requests per second."""

    def __init__(self, capacity, rate, clock=None):
        self.capacity = capacity
        self.rate = rate
        self.clock = clock or MonotonicClock()
        self._buckets = {}

    def _bucket(self, key):
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.capacity, self.rate, self.clock)
            self._buckets[key] = bucket
        return bucket

    def allow(self, key, cost=1):
        return self._bucket(key).consume(cost)

    def remaining(self, key):
        return int(self._bucket(key).available())
