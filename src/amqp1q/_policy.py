"""Retry policy: when a handler fails, retry with backoff, then dead-letter."""

from __future__ import annotations

import math
import random
from typing import Any

import attrs

from ._errors import InvalidSetting

__all__ = ["ReconnectPolicy", "RetryPolicy"]


def _positive_int(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidSetting(f"RetryPolicy.{attribute.name} must be an int >= 1, got {value!r}")


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise InvalidSetting(f"RetryPolicy.{attribute.name} must be a number >= 0, got {value!r}")


def _at_least_one(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 1:
        raise InvalidSetting(f"RetryPolicy.{attribute.name} must be a number >= 1, got {value!r}")


@attrs.frozen(slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, a bounded number of attempts, then the dead-letter queue.

    A job whose handler fails on attempt ``n`` (``n`` counts from 1) is retried after
    :meth:`backoff` ``(n)`` seconds while ``n < max_attempts``; on attempt ``max_attempts`` it is
    dead-lettered. The delay before retry ``n`` is ``initial_delay * multiplier ** (n - 1)``,
    capped at ``max_delay``; with ``jitter`` it is drawn uniformly from ``[delay / 2, delay]``,
    so a burst of failures spreads out but no retry comes sooner than half its step.
    """

    max_attempts: int = attrs.field(default=5, validator=_positive_int)
    initial_delay: float = attrs.field(default=1.0, validator=_non_negative)
    max_delay: float = attrs.field(default=300.0, validator=_non_negative)
    multiplier: float = attrs.field(default=2.0, validator=_at_least_one)
    jitter: bool = True

    def backoff(self, attempt: int, *, rng: random.Random | None = None) -> float:
        """Seconds to wait before retrying a job that failed on ``attempt``."""
        exponent = max(attempt, 1) - 1
        try:
            step = self.initial_delay * self.multiplier**exponent
        except OverflowError:
            step = self.max_delay
        delay = min(self.max_delay, step)
        if self.jitter and delay > 0:
            delay = (rng or random).uniform(delay / 2, delay)
        return delay

    def exhausted(self, attempt: int) -> bool:
        """True when a failure on ``attempt`` should dead-letter the job rather than retry it."""
        return attempt >= self.max_attempts


def _optional_positive_int(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _positive_int(_, attribute, value)


@attrs.frozen(slots=True)
class ReconnectPolicy:
    """How a lost connection is re-dialled: exponential backoff with full jitter.

    Attempt ``n`` waits a random time in ``[0, min(max_delay, initial_delay * multiplier **
    (n - 1))]`` first. ``max_attempts=None`` retries forever. Links and consumers are
    re-attached; pushes whose outcome was lost are re-sent with the same message-id when
    ``resend_pushes`` (at-least-once; the broker may then hold a duplicate), or fail with
    :class:`~amqp1q.ConnectionLost`. The *first* connect is not retried: it fails fast.
    """

    initial_delay: float = attrs.field(default=0.1, validator=_non_negative)
    max_delay: float = attrs.field(default=5.0, validator=_non_negative)
    multiplier: float = attrs.field(default=2.0, validator=_at_least_one)
    max_attempts: int | None = attrs.field(default=None, validator=_optional_positive_int)
    resend_pushes: bool = True

    def backoff(self, attempt: int, *, rng: random.Random | None = None) -> float:
        """Seconds to wait before re-dial ``attempt`` (from 1)."""
        try:
            step = self.initial_delay * self.multiplier ** (max(attempt, 1) - 1)
        except OverflowError:
            step = self.max_delay
        return (rng or random).uniform(0, min(self.max_delay, step))
