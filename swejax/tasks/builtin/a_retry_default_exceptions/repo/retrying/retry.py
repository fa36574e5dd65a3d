"""A small retry decorator with exponential backoff."""
import functools
import time


class RetryError(Exception):
    """Raised when all attempts failed; ``last`` holds the final exception."""

    def __init__(self, attempts, last):
        super().__init__("gave up after %d attempts: %r" % (attempts, last))
        self.attempts = attempts
        self.last = last


def retry(attempts=3, delay=0.0, backoff=2.0, exceptions=(ValueError,), sleep=time.sleep):
    """Retry the decorated function when it raises.

    attempts:   total number of calls before giving up (default 3).
    delay:      seconds to wait after the first failure.
    backoff:    factor applied to the delay after each further failure.
    exceptions: exception classes that trigger a retry; by default any
                ``Exception``. Other exceptions propagate immediately.
    sleep:      function used to wait (replaceable in tests).
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")

    def decorator(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            wait = delay
            for attempt in range(1, attempts + 1):
                try:
                    return func(*args, **kwargs)
                except exceptions as exc:
                    if attempt == attempts:
                        raise RetryError(attempts, exc) from exc
                    if wait > 0:
                        sleep(wait)
                    wait *= backoff

        return wrapper

    return decorator
