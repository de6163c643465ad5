"""Middleware: code around every job a worker runs, for logging, metrics, auth, idempotency.

A middleware is an async callable ``(job, call_next)``::

    async def timing(job: ReceivedJob, call_next: CallNext) -> None:
        started = time.perf_counter()
        handled = await call_next()       # inner middleware, then the handler in job.process()
        log.info("%s: %s in %.3f s", job.name, handled.outcome.value, time.perf_counter() - started)

``await call_next()`` returns a :class:`Handled` once the job is settled: its ``outcome`` (acked,
retried, released or dead-lettered) and the exception the handler raised, if any. It never
raises an :class:`Exception`; if the job is cancelled (the worker's drain ran out of grace) it
raises :class:`~asyncio.CancelledError` after the job was released — let that propagate.

The first middleware registered is the outermost. No job is ever lost to a middleware:

- one that raises before the job is settled fails the job: it is settled by the queue's
  :class:`~amqp1q.RetryPolicy` as if the handler had raised (``dead_letter_on`` applies), and
  the outer middleware see that in the :class:`Handled` their ``call_next()`` returns;
- one that raises after the job is settled is logged, and changes nothing;
- one that is cancelled leaves the job released (never dead-lettered);
- one may settle the job itself and skip ``call_next()`` (``await job.ack()`` for a
  duplicate); one that returns without doing either dead-letters the job with the reason
  ``"not handled"``, so the mistake is seen rather than the job acked unrun;
- ``call_next()`` runs the handler once: a second call raises :class:`RuntimeError`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs

from ._adapter import Outcome
from ._errors import InvalidSetting
from ._received import release_on_cancel, settle_failure

if TYPE_CHECKING:
    from ._received import ReceivedJob

__all__ = ["NOT_HANDLED", "CallNext", "Handled", "Middleware", "check_middleware", "run"]

log = logging.getLogger("amqp1q.worker")

#: The dead-letter reason of a job a middleware neither passed on nor settled.
NOT_HANDLED: Final = "not handled"


@attrs.frozen(slots=True)
class Handled:
    """What ``await call_next()`` returns: how the job was settled, and the handler's error."""

    #: How the job was settled: ``ACK``, ``RETRY``, ``RELEASE`` or ``REJECT`` (dead-lettered).
    outcome: Outcome
    #: The exception the handler (or an inner middleware) raised, or ``None``.
    error: Exception | None = None


CallNext = Callable[[], Awaitable[Handled]]
Middleware = Callable[["ReceivedJob", CallNext], Awaitable[None]]


def check_middleware(middleware: Iterable[Middleware]) -> tuple[Middleware, ...]:
    """The middleware as a tuple, each checked: an async callable taking ``(job, call_next)``."""
    given: object = middleware
    if callable(given) or not isinstance(given, Iterable) or isinstance(given, (str, bytes)):
        raise InvalidSetting(
            f"middleware must be a list of middleware, like [log_jobs], not {given!r}"
        )
    checked = tuple(middleware)
    for item in checked:
        if not callable(item):
            raise InvalidSetting(f"a middleware must be callable, got {item!r}")
        if inspect.isfunction(item) and not inspect.iscoroutinefunction(item):
            raise InvalidSetting(f"a middleware must be async (async def), got {_name(item)}")
        try:
            inspect.signature(item).bind(None, None)
        except TypeError:
            raise InvalidSetting(
                f"a middleware takes (job, call_next); {_name(item)} does not"
            ) from None
        except ValueError:  # no signature to read
            pass
    return checked


async def run(
    job: ReceivedJob, middleware: Sequence[Middleware], endpoint: Callable[[], Awaitable[None]]
) -> Handled:
    """Run ``endpoint`` (the handler, unsettling) inside ``job.process()``, inside
    ``middleware`` (the first outermost). Returns once the job is settled."""
    call: CallNext = _Innermost(job, endpoint)
    for item in reversed(middleware):
        call = _Layer(item, job, call)
    return await call()


class _Innermost:
    __slots__ = ("_endpoint", "_job")

    def __init__(self, job: ReceivedJob, endpoint: Callable[[], Awaitable[None]]) -> None:
        self._job = job
        self._endpoint = endpoint

    async def __call__(self) -> Handled:
        job = self._job
        error: Exception | None = None
        try:
            async with job.process():
                try:
                    await self._endpoint()
                except Exception as exc:
                    error = exc
                    raise
        except Exception:  # process() swallows the handler's error: this is settling failing
            log.warning("settling job %s failed", job.id, exc_info=True, extra=_extra(job))
        return Handled(_outcome(job), error)


class _Layer:
    """One middleware around the rest (``inner``), keeping the rules of the module docstring."""

    __slots__ = ("_called", "_inner", "_job", "_middleware", "_result")

    def __init__(self, middleware: Middleware, job: ReceivedJob, inner: CallNext) -> None:
        self._middleware = middleware
        self._job = job
        self._inner = inner
        self._called = False
        self._result: Handled | None = None

    async def _call_next(self) -> Handled:
        if self._called:
            raise RuntimeError(f"call_next() was already called for job {self._job.id}")
        self._called = True
        self._result = await self._inner()
        return self._result

    async def __call__(self) -> Handled:
        job = self._job
        try:
            await self._middleware(job, self._call_next)
        except Exception as exc:
            if job.settled:
                log.warning(
                    "middleware %s failed after job %s was settled",
                    _name(self._middleware),
                    job.id,
                    exc_info=exc,
                    extra=_extra(job),
                )
                return self._result or Handled(_outcome(job))
            try:  # failed before the job was settled: the job failed
                await settle_failure(job, exc)
            except Exception:
                log.warning("settling job %s failed", job.id, exc_info=True, extra=_extra(job))
            return Handled(_outcome(job), exc)
        except BaseException:
            if not job.settled:  # cancelled (or worse) before the job was settled: put it back
                await release_on_cancel(job)
            raise
        if self._result is not None:
            return self._result
        if not job.settled:
            await self._not_handled()
        return Handled(_outcome(job))

    async def _not_handled(self) -> None:
        job = self._job
        name = _name(self._middleware)
        log.warning(
            "middleware %s returned without calling call_next() or settling job %s; dead-lettered",
            name,
            job.id,
            extra=_extra(job),
        )
        try:
            await job.reject(NOT_HANDLED, f"middleware {name} returned without calling call_next()")
        except Exception:
            log.warning("settling job %s failed", job.id, exc_info=True, extra=_extra(job))


def _outcome(job: ReceivedJob) -> Outcome:
    # Every path above settles the job (a settlement marks it first, even one that fails).
    return job.outcome or Outcome.RELEASE


def _name(func: object) -> str:
    return getattr(func, "__qualname__", None) or type(func).__qualname__


def _extra(job: ReceivedJob) -> dict[str, Any]:
    return {"queue": job.queue, "job_id": job.id}
