"""The push half of the facade: :class:`Pusher`, one per :class:`~amqp1q.JobQueue`.

It checks what it is given, wraps the push in a producer span when tracing is on (its context
added to every job's headers), bounds the wait for the broker's outcomes by the push timeout,
counts the results (``queue.stats()``) and records the ``send`` metrics. The adapter does the
sending; the queue checks it is open first, and waits for pushes under way when it closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from . import _metrics, _tracing
from ._adapter import SendResult
from ._deadlines import SUPPORTED, SharedDeadline
from ._errors import Amqp1qError, InvalidJob, PushTimeout
from ._job import Job, Receipt, with_headers
from ._settings import check_seconds
from ._shield import deadline
from ._stats import Counters

if TYPE_CHECKING:
    from ._queue import JobQueue

__all__ = ["Pusher"]

log = logging.getLogger("amqp1q.queue")


class Pusher:
    """Pushes through one queue's adapter (see the module docstring)."""

    __slots__ = ("_counters", "_deadline", "_idle", "_queue", "_under_way")

    def __init__(self, queue: JobQueue, counters: Counters) -> None:
        self._queue = queue
        self._counters = counters
        self._under_way = 0
        self._idle = asyncio.Event()
        self._idle.set()
        #: The push timeout's one timer, shared by every push under way (``_deadlines``).
        self._deadline: SharedDeadline | None = None

    def send(self, jobs: list[Job], timeout: float | None) -> Coroutine[Any, Any, list[SendResult]]:
        """Each job's receipt or error, in order (the queue raises them as it promises). The
        coroutine that pushes, itself: a push() awaits as few levels as can be."""
        queue = self._queue
        for job in jobs:
            if not isinstance(job, Job):
                raise InvalidJob(
                    f"push takes Job objects, not {type(job).__name__}", queue=queue.name
                )
        if not jobs:
            return _no_results()
        if _tracing.active():
            return self._send_traced(jobs, timeout)
        return self._send_now(jobs, timeout)

    async def _send_traced(self, jobs: list[Job], timeout: float | None) -> list[SendResult]:
        jobs, span = self._traced(jobs)
        try:
            results = await self._send_now(jobs, timeout)
        except BaseException as exc:
            _tracing.end_span(span, exc)
            raise
        failed = [result for result in results if isinstance(result, Amqp1qError)]
        _tracing.end_push_span(span, failed, len(results))
        return results

    async def wait_idle(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for pushes under way to learn their outcome."""
        if not self._under_way:
            return
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except asyncio.TimeoutError:
            queue = self._queue
            log.warning(
                "closing %s with %d push(es) still waiting for an outcome",
                queue.url,
                self._under_way,
                extra={"queue": queue.name},
            )

    def _traced(self, jobs: list[Job]) -> tuple[list[Job], Any]:
        """One producer span for the push (a batch's, for ``push_many``); its context goes in
        every job's headers as the context the job was created in."""
        queue = self._queue
        facts = queue.adapter.server_facts
        job_id = jobs[0].id if len(jobs) == 1 else None
        span = _tracing.producer_span(queue.name, facts.system, job_id, facts.server, len(jobs))
        # Diagnostic-Id: Azure SDKs read it; other brokers need not carry it.
        carrier = _tracing.traced_headers(span, diagnostic_id=facts.system == "servicebus")
        if not carrier:
            return jobs, span
        return [with_headers(job, carrier) for job in jobs], span

    async def _send_now(self, jobs: list[Job], timeout: float | None) -> list[SendResult]:
        queue = self._queue
        limit = queue.push_timeout if timeout is None else check_seconds("timeout", timeout)
        counters = self._counters
        started = _metrics.start()
        self._under_way += 1
        self._idle.clear()
        try:
            if SUPPORTED and timeout is None:  # the queue's push_timeout: one shared timer
                shared = self._deadline
                if shared is None or shared.seconds != limit:
                    shared = self._deadline = SharedDeadline(limit)
                wait = shared.enter()
                try:
                    results = await queue.adapter.send(jobs, queue.priority)
                except BaseException as exc:
                    if shared.leave(wait, exc):
                        raise TimeoutError from None
                    raise
                shared.leave(wait, None)
            else:
                async with deadline(limit):
                    results = await queue.adapter.send(jobs, queue.priority)
        except TimeoutError:
            counters.push_failed += len(jobs)
            error = PushTimeout(
                f"no outcome from the broker within {limit:g} s for {len(jobs)} job(s); "
                "they may or may not have been queued",
                queue=queue.name,
                address=queue.address,
                job_id=jobs[0].id if len(jobs) == 1 else None,
            )
            if started is not None:
                _metrics.sent(queue, started, len(jobs), error)
            raise error from None
        except BaseException as exc:
            counters.push_failed += len(jobs)
            if started is not None:
                _metrics.sent(queue, started, len(jobs), exc)
            raise
        finally:
            self._under_way -= 1
            if not self._under_way:
                self._idle.set()
        for job, result in zip(jobs, results, strict=True):
            if isinstance(result, Receipt):
                counters.pushed += 1
                if job.delay:
                    counters.delayed += 1
            else:
                counters.push_failed += 1
        if started is not None:
            _metrics.sent(queue, started, len(jobs), results)
        return results


async def _no_results() -> list[SendResult]:
    return []
