"""Retry policy: when a handler fails, retry with backoff, then dead-letter."""

from __future__ import annotations

import importlib
import math
import random
from collections.abc import Iterable, Sequence
from typing import Any, Final

import attrs

from ._errors import InvalidSetting

__all__ = [
    "INVALID_PAYLOAD",
    "NOT_RETRIED",
    "ReconnectPolicy",
    "RetryPolicy",
    "exceptions_named",
]

#: The dead-letter reason of a failure :meth:`RetryPolicy.dead_letters` refuses to retry.
NOT_RETRIED: Final = "not retried"
#: The dead-letter reason of a job whose payload is not its handler's declared type.
INVALID_PAYLOAD: Final = "invalid payload"


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


ExceptionClasses = tuple[type[Exception], ...]


def _classes(name: str, value: object) -> ExceptionClasses:
    """A tuple (or list) of Exception subclasses, or one such class, as a tuple."""
    items: Iterable[object]
    if isinstance(value, type):
        items = (value,)
    elif isinstance(value, (tuple, list)):
        items = value
    else:
        raise InvalidSetting(
            f"RetryPolicy.{name} must be a tuple of exception classes, like (ValueError,), "
            f"got {value!r}"
        )
    classes = tuple(items)
    for item in classes:
        if not isinstance(item, type) or not issubclass(item, Exception):
            hint = " (pass the class itself, not its name)" if isinstance(item, str) else ""
            raise InvalidSetting(
                f"RetryPolicy.{name} must hold Exception subclasses, got {item!r}{hint}"
            )
    return classes


def exceptions_named(value: object, where: str) -> object:
    """A config file's exception names (``"TimeoutError"``, ``"myapp.errors:BadInput"`` or
    ``"myapp.errors.BadInput"``) imported as classes; anything else is returned as it is.
    Errors start with ``where`` (the setting's name)."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        return value
    try:
        return tuple(_import_exception(name) for name in value)
    except InvalidSetting as exc:
        raise InvalidSetting(f"{where}: {exc.message}") from None


def _import_exception(name: str) -> object:
    module_name, sep, attr = name.rpartition(":") if ":" in name else name.rpartition(".")
    if not sep:
        module_name, attr = "builtins", name
    try:
        found: object = importlib.import_module(module_name)
        for part in attr.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise InvalidSetting(f"cannot import the exception {name!r}: {exc}") from None
    if not isinstance(found, type) or not issubclass(found, Exception):
        raise InvalidSetting(f"{name!r} is not an Exception subclass")
    return found


def _retry_on(value: Sequence[type[Exception]] | type[Exception]) -> ExceptionClasses:
    return _classes("retry_on", value)


def _dead_letter_on(value: Sequence[type[Exception]] | type[Exception]) -> ExceptionClasses:
    return _classes("dead_letter_on", value)


def _disjoint(policy: RetryPolicy, _: attrs.Attribute[Any], value: ExceptionClasses) -> None:
    both = [cls.__name__ for cls in value if cls in policy.retry_on]
    if both:
        raise InvalidSetting(
            f"RetryPolicy: {', '.join(both)} cannot be in both retry_on and dead_letter_on"
        )


@attrs.frozen(slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, a bounded number of attempts, then the dead-letter queue.

    A job whose handler fails on attempt ``n`` (``n`` counts from 1) is retried after
    :meth:`backoff` ``(n)`` seconds while ``n < max_attempts``; on attempt ``max_attempts`` it is
    dead-lettered. The delay before retry ``n`` is ``initial_delay * multiplier ** (n - 1)``,
    capped at ``max_delay``; with ``jitter`` it is drawn uniformly from ``[delay / 2, delay]``,
    so a burst of failures spreads out but no retry comes sooner than half its step.

    Which failures are retried at all (see :meth:`dead_letters`): an exception is matched
    against ``retry_on`` and ``dead_letter_on`` by subclass, as ``except`` does.

    - only a ``dead_letter_on`` class matches: dead-lettered at once, without retrying;
    - only a ``retry_on`` class matches: retried as above;
    - neither matches: dead-lettered at once (``retry_on`` is an allow-list);
    - both match: the more specific class wins — retried only if a matching ``retry_on`` class
      is a subclass of every matching ``dead_letter_on`` class; otherwise (say, unrelated
      classes of a multiply-inheriting exception) dead-lettered.

    The defaults, ``retry_on=(Exception,)`` and ``dead_letter_on=()``, retry every failure. A
    class may not be in both. Settling by hand is not affected: ``job.retry()`` retries.
    """

    max_attempts: int = attrs.field(default=5, validator=_positive_int)
    initial_delay: float = attrs.field(default=1.0, validator=_non_negative)
    max_delay: float = attrs.field(default=300.0, validator=_non_negative)
    multiplier: float = attrs.field(default=2.0, validator=_at_least_one)
    jitter: bool = True
    retry_on: ExceptionClasses = attrs.field(default=(Exception,), converter=_retry_on)
    dead_letter_on: ExceptionClasses = attrs.field(
        default=(), converter=_dead_letter_on, validator=_disjoint
    )

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

    def dead_letters(self, exc: BaseException) -> str | None:
        """Why a failure with ``exc`` is dead-lettered at once, or ``None`` if it is retried.

        The reason names the rule, for the dead-letter description: ``"ValueError is in
        dead_letter_on"``, ``"JSONDecodeError is in dead_letter_on (as ValueError)"``,
        ``"KeyError is not in retry_on"``.
        """
        kind = type(exc)
        refuse = [cls for cls in self.dead_letter_on if issubclass(kind, cls)]
        allow = [cls for cls in self.retry_on if issubclass(kind, cls)]
        if not refuse:
            return None if allow else f"{kind.__name__} is not in retry_on"
        if any(all(issubclass(cls, other) for other in refuse) for cls in allow):
            return None  # a retry_on class more specific than every dead_letter_on match
        via = "" if refuse[0] is kind else f" (as {refuse[0].__name__})"
        return f"{kind.__name__} is in dead_letter_on{via}"


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
