"""Retry policy and circuit breaker for LLM servers: how long to wait, and when to stop trying.

Kept apart from the HTTP client so the policy is small, pure and testable: ``Retry-After`` in
either of its forms, jittered exponential backoff, and a breaker that turns a dead server into
one fast failure instead of hours of retries across a batch.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Mapping

MAX_BACKOFF_S = 60.0


def retry_after_s(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date) / ``retry-after-ms``."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_s(attempt: int, base: float = 0.5, cap: float = MAX_BACKOFF_S) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, so that 8 threads that
    failed together do not retry together."""
    delay = min(cap, base * 2**attempt)
    return delay / 2 + random.uniform(0, delay / 2)


class CircuitBreaker:
    """Opens after ``threshold`` calls in a row failed (each after its own retries).

    Once open, every call fails at once: with 8 threads and a dead server, a batch stops in
    one round of retries instead of grinding through every remaining feature.
    """

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.failures = 0
        self.last_error = ""
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        """Whether calls should fail at once (a threshold of 0 never opens)."""
        return self.threshold > 0 and self.failures >= self.threshold

    def success(self) -> None:
        """A call reached the server: the count of failures in a row starts again."""
        with self._lock:
            self.failures = 0

    def failure(self, error: str) -> None:
        """A call failed after all its retries; ``error`` is quoted once the breaker opens."""
        with self._lock:
            self.failures += 1
            self.last_error = error

    def reset(self) -> None:
        """Close the breaker again (after the user restarted the server, in a long session)."""
        self.success()
