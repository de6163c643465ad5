"""OpenTelemetry metrics through opentelemetry-api only (the application brings the SDK).

Instrument names follow the messaging semantic conventions where they have one:

- ``messaging.client.sent.messages`` (counter): jobs pushed, each once, ``error.type`` if refused;
- ``messaging.client.operation.duration`` (histogram, s): a ``push``/``push_many`` call, and
  each settlement (``messaging.operation.name`` = the outcome, ``messaging.operation.type`` =
  ``settle``);
- ``messaging.client.consumed.messages`` (counter): jobs handed to the application;
- ``messaging.process.duration`` (histogram, s): ``async with job.process():``, settlement
  included, as its span;

and under ``amqp1q.`` where they have none:

- ``amqp1q.settled.messages`` (counter): settlements by ``amqp1q.outcome`` — ``ack``,
  ``retry``, ``release``, ``reject`` (the application's ``job.reject()``) or ``dead_letter``
  (the retry policy's: attempts used up, or a failed handler with ``requeue_on_fail=False``);
- ``amqp1q.in_flight`` (observable up-down counter): jobs handed out and not yet settled. It is
  read from each open queue's own count (the one ``queue.stats()`` shows) when the SDK
  collects, so it costs nothing per job and cannot drift, whatever way a job leaves the hand.

With no SDK meter provider installed, each hook costs one :func:`active` check, about 0.1 µs
(three per consumed job, one per push call): the provider is looked up at most once a second
until one appears, then never again (OpenTelemetry lets a provider be set once).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Histogram, Meter, NoOpMeterProvider, Observation

from ._adapter import Outcome
from ._otel import ProviderWatch, messaging_attributes
from ._version import __version__

if TYPE_CHECKING:
    from ._queue import JobQueue

__all__ = ["active", "consumed", "processed", "sent", "settled", "start", "watch"]

#: The bucket boundaries the messaging conventions advise for durations, in seconds.
DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip


try:  # the API's default: a proxy that forwards to whatever provider is set later
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    _NO_SDK: tuple[type, ...] = (_ProxyMeterProvider, NoOpMeterProvider)
except ImportError:  # pragma: no cover - a future API that moved it
    _NO_SDK = (NoOpMeterProvider,)

_provider = ProviderWatch(metrics.get_meter_provider, _NO_SDK)
_queues: weakref.WeakSet[JobQueue] = weakref.WeakSet()


def active() -> bool:
    """True once the application installed an OpenTelemetry SDK meter provider (looked for at
    most once a second until then)."""
    return _provider.active()


def start() -> float | None:
    """A start time for an operation to be measured, or ``None`` when nothing is recorded."""
    return time.perf_counter() if active() else None


def watch(queue: JobQueue) -> None:
    """Report ``queue``'s jobs in flight (it is forgotten when garbage-collected)."""
    _queues.add(queue)


class _Instruments:
    __slots__ = ("consumed", "operation", "process", "sent", "settled")

    def __init__(self, meter: Meter) -> None:
        self.sent = meter.create_counter(
            "messaging.client.sent.messages",
            unit="{message}",
            description="Number of messages producer attempted to send to the broker.",
        )
        self.consumed = meter.create_counter(
            "messaging.client.consumed.messages",
            unit="{message}",
            description="Number of messages that were delivered to the application.",
        )
        self.operation = _histogram(
            meter,
            "messaging.client.operation.duration",
            "Duration of messaging operation initiated by a producer or consumer client.",
        )
        self.process = _histogram(
            meter, "messaging.process.duration", "Duration of processing operation."
        )
        self.settled = meter.create_counter(
            "amqp1q.settled.messages",
            unit="{message}",
            description="Jobs settled, by outcome.",
        )
        meter.create_observable_up_down_counter(
            "amqp1q.in_flight",
            callbacks=[_observe_in_flight],
            unit="{message}",
            description="Jobs handed to the application and not yet settled.",
        )


def _histogram(meter: Meter, name: str, description: str) -> Histogram:
    try:
        return meter.create_histogram(
            name,
            unit="s",
            description=description,
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
    except TypeError:  # opentelemetry-api < 1.30 takes no advice
        return meter.create_histogram(name, unit="s", description=description)


def _observe_in_flight(options: CallbackOptions) -> Iterable[Observation]:
    # The SDK may call this on its exporter thread: it only reads.
    totals: dict[tuple[tuple[str, Any], ...], int] = {}
    for queue in list(_queues):
        count = queue.stats().in_flight
        if queue.is_open or count:
            key = tuple(_base(queue).items())
            totals[key] = totals.get(key, 0) + count
    return [Observation(count, dict(key)) for key, count in totals.items()]


_instruments = _Instruments(metrics.get_meter("amqp1q", __version__))


# -- recording (called only when active) ------------------------------------------------------


def _base(queue: JobQueue) -> dict[str, Any]:
    facts = queue.adapter.server_facts
    return messaging_attributes(facts.system, queue.name, facts.server)


def _error_type(error: BaseException) -> str:
    return type(error).__qualname__


def sent(
    queue: JobQueue, started: float, count: int, results: Sequence[Any] | BaseException
) -> None:
    """``count`` jobs pushed in one call, with their results (or the exception it raised)."""
    elapsed = time.perf_counter() - started
    attributes = _base(queue)
    attributes["messaging.operation.name"] = "send"
    instruments = _instruments
    failure: BaseException | None = None
    if isinstance(results, BaseException):
        failure = results
        instruments.sent.add(count, {**attributes, "error.type": _error_type(failure)})
    else:
        accepted = 0
        for result in results:
            if isinstance(result, BaseException):
                failure = failure or result
                instruments.sent.add(1, {**attributes, "error.type": _error_type(result)})
            else:
                accepted += 1
        if accepted:
            instruments.sent.add(accepted, attributes)
    attributes["messaging.operation.type"] = "send"
    if failure is not None:
        attributes["error.type"] = _error_type(failure)
    instruments.operation.record(elapsed, attributes)


def consumed(queue: JobQueue) -> None:
    """A job handed to the application."""
    attributes = _base(queue)
    attributes["messaging.operation.name"] = "receive"
    _instruments.consumed.add(1, attributes)


def settled(
    queue: JobQueue,
    outcome: Outcome,
    by_policy: bool,
    started: float | None,
    error: BaseException | None,
) -> None:
    """A settlement (``started`` is ``None`` when none was tried, as on a lost lock)."""
    label = "dead_letter" if by_policy and outcome is Outcome.REJECT else outcome.value
    attributes = _base(queue)
    attributes["messaging.operation.name"] = label
    if error is not None:
        attributes["error.type"] = _error_type(error)
    _instruments.settled.add(1, {**attributes, "amqp1q.outcome": label})
    if started is not None:
        attributes["messaging.operation.type"] = "settle"
        _instruments.operation.record(time.perf_counter() - started, attributes)


def processed(queue: JobQueue, started: float, error: BaseException | None) -> None:
    """``job.process()`` ended (``error``: what it ended with, handled or not)."""
    elapsed = time.perf_counter() - started
    attributes = _base(queue)
    attributes["messaging.operation.name"] = "process"
    if error is not None:
        attributes["error.type"] = _error_type(error)
    _instruments.process.record(elapsed, attributes)
