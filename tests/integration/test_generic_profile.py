"""The ``generic`` profile (a broker vouched for nothing) against the embedded broker taken for
an unknown one: delays held by the consumer, outcomes emulated by re-publishing; and
``job.process()`` letting out nothing but the handler's own exception."""

from __future__ import annotations

import asyncio
import time

import pytest

from amqp1q import Consumer, Job, JobQueue, Outcome, ReceivedJob, RetryPolicy
from amqp1q.testing import Broker

pytestmark = pytest.mark.anyio


async def _receive(consumer: Consumer, timeout: float = 5) -> ReceivedJob:
    job = await asyncio.wait_for(consumer.receive(), timeout)
    assert job is not None
    return job


def _generic(broker: Broker, **settings: object) -> JobQueue:
    return JobQueue.from_url(broker.url, queue="q", broker="generic", **settings)  # type: ignore[arg-type]


async def test_a_failing_handler_is_retried_after_its_backoff() -> None:
    # The case: the default RetryPolicy asks for a delay the broker cannot give.
    async with Broker() as broker, _generic(broker) as queue:
        assert queue.adapter.profile.name == "generic"  # type: ignore[attr-defined]
        await queue.push(Job("flaky"))
        async with queue.consume() as consumer:
            job = await _receive(consumer)
            failed_at = time.monotonic()
            async with job.process():  # nothing escapes: the failure is logged, the job retried
                raise RuntimeError("handler failed")
            assert job.outcome is Outcome.RETRY
            again = await _receive(consumer)
            assert time.monotonic() - failed_at >= 0.5 - 0.05  # RetryPolicy's first step: 0.5-1 s
            assert (again.id, again.attempt) == (job.id, 2)
            await again.ack()
        assert len(broker.queue("q")) == 0


async def test_held_jobs_use_no_prefetch_but_come_due_within_it() -> None:
    async with Broker() as broker, _generic(broker) as queue:
        await queue.push(Job("later", "later", delay=0.3))
        await queue.push(Job("now", "now"))
        async with queue.consume(prefetch=1) as consumer:
            now = await _receive(consumer)  # "later" is held: it did not take the only slot
            assert now.payload == "now"
            await asyncio.sleep(0.5)  # "later" is due, but the consumer's prefetch is in hand
            assert await consumer.receive(timeout=0.2) is None
            await now.ack()
            later = await _receive(consumer)
            assert later.payload == "later"
            await later.ack()


async def test_a_consumer_that_dies_holding_a_delayed_retry_loses_nothing() -> None:
    async with Broker() as broker:
        queue = _generic(broker, reconnect=False)
        await queue.open()
        await queue.push(Job("held"))
        consumer = queue.consume()
        job = await _receive(consumer)
        await job.retry(delay=60)  # held: the delivery stays unsettled at the broker
        queue.adapter.connection.abort()  # type: ignore[attr-defined]  # the process "dies"
        await queue.close(grace=0)
        async with _generic(broker) as fresh, fresh.consume() as again:
            back = await _receive(again)  # early (the delay died with the process), not lost
            assert back.id == job.id
            await back.ack()


async def test_a_delayed_push_survives_the_consumer_holding_it() -> None:
    async with Broker() as broker:
        queue = _generic(broker, reconnect=False)
        await queue.open()
        pushed_at = time.monotonic()
        receipt = await queue.push(Job("later", delay=0.8))  # the broker has it now
        consumer = queue.consume()
        await consumer.open()
        assert await consumer.receive(timeout=0.2) is None  # held, not handed out
        queue.adapter.connection.abort()  # type: ignore[attr-defined]
        await queue.close(grace=0)
        async with _generic(broker) as fresh, fresh.consume() as again:
            job = await _receive(again)  # the next consumer holds it until its time too
            assert job.id == receipt.job_id
            assert time.monotonic() - pushed_at >= 0.8 - 0.05
            await job.ack()


async def test_closing_a_consumer_retries_what_it_held_at_once() -> None:
    async with Broker() as broker, _generic(broker) as queue:
        await queue.push(Job("x"))
        async with queue.consume() as consumer:
            job = await _receive(consumer)
            await job.retry(delay=60)
        async with queue.consume() as again:
            back = await _receive(again)
            assert (back.id, back.attempt) == (job.id, 2)
            await back.ack()


async def test_closing_gives_back_what_was_buffered_perhaps_twice_never_lost() -> None:
    # The generic profile trusts no broker to take back what a detaching link held (Qpid
    # Proton's C++ example broker drops it), so it publishes it again after detaching; a
    # broker that did take it back -- as this one does -- then holds a duplicate.
    async with Broker() as broker, _generic(broker) as queue:
        await queue.push_many([Job("n", i) for i in range(4)])
        async with queue.consume(prefetch=4) as consumer:
            first = await _receive(consumer)
            await asyncio.sleep(0.2)  # the other three arrive in its buffer
            await first.ack()
        async with queue.consume(prefetch=10) as again:
            rest: list[ReceivedJob] = []
            while (job := await again.receive(timeout=0.5)) is not None:
                rest.append(job)
                await job.ack()
    payloads = sorted(job.payload for job in rest)
    assert sorted(set(payloads)) == [1, 2, 3]  # nothing lost
    assert len(payloads) <= 6  # at most one duplicate of each


@pytest.mark.parametrize("reraise", [True, False])
async def test_process_lets_out_only_the_handlers_own_exception(reraise: bool) -> None:
    async with Broker() as broker:
        queue = JobQueue.from_url(broker.url, queue="q", reconnect=False, retry=RetryPolicy())
        await queue.open()
        try:
            await queue.push(Job("x"))
            consumer = queue.consume()
            job = await _receive(consumer)
            escaped: BaseException | None = None
            try:
                async with job.process(reraise=reraise):
                    queue.adapter.connection.abort()  # type: ignore[attr-defined]
                    await asyncio.sleep(0.1)  # settling now fails: the connection is gone
                    raise KeyError("handler")
            except BaseException as exc:  # what escapes is the point
                escaped = exc
            if reraise:
                assert isinstance(escaped, KeyError)
                assert escaped.args == ("handler",)
            else:
                assert escaped is None
            assert job.outcome is Outcome.RETRY  # asked for; the broker redelivers the job
        finally:
            await queue.close(grace=0)
