"""Retry policy: ``Retry-After`` in both its forms, jittered backoff, the breaker's states."""

from __future__ import annotations

import email.utils
import time

import pytest

from autolabel.llm import CircuitBreaker, backoff_s, retry_after_s


def test_retry_after_http_date() -> None:
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after_s({"retry-after": date}, now=now) == pytest.approx(30, abs=1)
    assert retry_after_s({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_s({"retry-after": "soon"}) is None and retry_after_s({}) is None


def test_backoff_is_half_fixed_half_jitter_and_capped() -> None:
    for attempt in range(12):
        delay = min(60.0, 0.5 * 2**attempt)
        assert delay / 2 <= backoff_s(attempt) <= delay


def test_breaker_opens_after_threshold_and_resets() -> None:
    breaker = CircuitBreaker(2)
    breaker.failure("down")
    assert not breaker.open
    breaker.failure("still down")
    assert breaker.open and breaker.last_error == "still down"
    breaker.reset()
    assert not breaker.open
    assert not CircuitBreaker(0).open  # threshold 0: never opens
