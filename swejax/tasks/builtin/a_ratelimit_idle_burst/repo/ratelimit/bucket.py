class TokenBucket:
    """A bucket holding at most ``capacity`` tokens, refilled at ``rate``
    tokens per second."""

    def __init__(self, capacity, rate, clock):
        if capacity <= 0 or rate <= 0:
            raise ValueError("capacity and rate must be positive")
        self.capacity = capacity
        self.rate = rate
        self.clock = clock
        self.tokens = float(capacity)
        self.updated = clock.now()

    def _refill(self):
        now = self.clock.now()
        elapsed = now - self.updated
        self.updated = now
        self.tokens = self.tokens + elapsed * self.rate

    def consume(self, amount=1):
        """Take ``amount`` tokens if available; return True on success."""
        if amount > self.capacity:
            raise ValueError("amount exceeds bucket capacity")
        self._refill()
        if amount > self.tokens:
            return False
        self.tokens -= amount
        return True

    def available(self):
        self._refill()
        return self.tokens
