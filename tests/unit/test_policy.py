"""RetryPolicy: exponential backoff, cap, jitter bounds, validation."""

from __future__ import annotations

import random

import pytest

from amqp1q import InvalidSetting, RetryPolicy


def test_exponential_without_jitter() -> None:
    policy = RetryPolicy(initial_delay=1, multiplier=2, max_delay=10, jitter=False)
    assert [policy.backoff(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_jitter_stays_within_half_to_full_step() -> None:
    policy = RetryPolicy(initial_delay=1, multiplier=3, max_delay=100)
    rng = random.Random(7)
    for attempt in range(1, 6):
        step = min(100, 3 ** (attempt - 1))
        values = [policy.backoff(attempt, rng=rng) for _ in range(200)]
        assert all(step / 2 <= v <= step for v in values)
        assert max(values) - min(values) > step / 10  # it really varies


def test_huge_attempts_do_not_overflow() -> None:
    assert RetryPolicy(max_delay=60, jitter=False).backoff(10_000) == 60


def test_exhausted() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [policy.exhausted(n) for n in (1, 2, 3, 4)] == [False, False, True, True]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": 2.5},
        {"initial_delay": -1},
        {"max_delay": float("inf")},
        {"multiplier": 0.5},
    ],
)
def test_invalid_policies(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidSetting, match="RetryPolicy"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
