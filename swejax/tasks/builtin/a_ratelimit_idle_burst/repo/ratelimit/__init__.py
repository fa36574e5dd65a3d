"""Token-bucket rate limiting, one bucket per client key."""
from .bucket import TokenBucket
from .clock import FakeClock, MonotonicClock
from .limiter import RateLimiter

__all__ = ["FakeClock", "MonotonicClock", "RateLimiter", "TokenBucket"]
