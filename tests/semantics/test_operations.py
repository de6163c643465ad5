"""Operating a queue -- depth, peek, replay and purge of dead letters, cancel, ttl -- on every
backend in ``BACKENDS``: counts match what was pushed, failed and replayed, and peeking changes
nothing (a consume afterwards gets every job, on its first attempt). A backend that cannot
raises UnsupportedFeature, which is asserted instead."""

from __future__ import annotations

import asyncio
import time

import pytest

from amqp1q import Job, JobQueue, QueueDepth, UnsupportedFeature

from .conftest import Backend
from .helpers import assert_nothing_more, take, take_one

pytestmark = pytest.mark.anyio


async def settled_depth(queue: JobQueue, backend: Backend, **want: int) -> QueueDepth:
    """``queue.depth()`` once it says ``want`` (at once where counts are exact; RabbitMQ's
    statistics are sampled every few seconds, so it is asked again until they agree)."""
    deadline = time.monotonic() + (0 if backend.exact_counts else 15)
    while True:
        depth = await queue.depth()
        seen = {name: getattr(depth, name) for name in want}
        if seen == want or time.monotonic() >= deadline:
            assert seen == want, depth
            return depth
        await asyncio.sleep(0.5)


async def test_depth_peek_replay_and_purge(backend: Backend) -> None:
    queue = await backend.make_queue(prefetch=1)
    async with queue:
        jobs = [Job("a", {"n": 1}), Job("b", b"\x00\xffraw"), Job("c", {"n": 3})]
        await queue.push_many(jobs)
        async with queue.consume() as consumer:
            poison = await take_one(consumer)
            await poison.reject("unprocessable", "field 'to' is missing")
        if not backend.counts:
            with pytest.raises(UnsupportedFeature):
                await queue.depth()
        else:
            depth = await settled_depth(queue, backend, ready=2, dead_lettered=1)
            if backend.counts_in_flight:
                assert depth.in_flight == 0
        if backend.peeks:
            for _ in range(2):  # peeking twice sees the same: it took nothing
                peeked = await queue.peek(10)
                assert [p.id for p in peeked] == [jobs[1].id, jobs[2].id]
                assert peeked[0].body == b"\x00\xffraw"
                assert peeked[0].to_dict()["payload"] == {"base64": "AP9yYXc="}
                assert peeked[1].payload == {"n": 3}
                (letter,) = await queue.peek(10, dead_letter=True)
                assert (letter.id, letter.name, letter.state) == (jobs[0].id, "a", "dead-lettered")
                assert letter.dead_letter_reason == "unprocessable"
                assert letter.dead_letter_description == "field 'to' is missing"
            if backend.counts and backend.exact_counts:
                await settled_depth(queue, backend, ready=2, dead_lettered=1)
        else:
            with pytest.raises(UnsupportedFeature):
                await queue.peek(10)
        assert await queue.replay_dead_letters() == 1
        if backend.counts and backend.exact_counts:
            await settled_depth(queue, backend, ready=3, dead_lettered=0)
        async with queue.consume(prefetch=10) as consumer:
            got = await take(consumer, 3)
            assert sorted(j.id for j in got) == sorted(j.id for j in jobs)
            assert [j.attempt for j in got] == [1, 1, 1]
            replayed = next(j for j in got if j.id == jobs[0].id)
            assert replayed.headers["amqp1q-replays"] == "1"
            assert replayed.headers["amqp1q-dead-letter-reason"] == "unprocessable"
            assert replayed.payload == {"n": 1}
            for job in got:
                if job is replayed:
                    await job.reject("again")
                else:
                    await job.ack()
            await assert_nothing_more(consumer, wait=0.2)
        if backend.purges:
            if backend.counts and backend.exact_counts:
                await settled_depth(queue, backend, dead_lettered=1)
            assert await queue.purge_dead_letters() == 1
            if backend.counts:
                await settled_depth(queue, backend, ready=0, dead_lettered=0)
        else:
            with pytest.raises(UnsupportedFeature):
                await queue.purge_dead_letters()


async def test_replay_takes_a_limit_and_a_filter(backend: Backend) -> None:
    queue = await backend.make_queue(prefetch=10)
    async with queue:
        await queue.push_many([Job("j", {"n": n}) for n in range(4)])
        async with queue.consume() as consumer:
            for job in await take(consumer, 4):
                await job.reject("odd" if job.payload["n"] % 2 else "even")
        assert await queue.replay_dead_letters(filter=lambda j: j.dead_letter_reason == "odd") == 2
        assert await queue.replay_dead_letters(limit=1) == 1
        async with queue.consume() as consumer:
            got = await take(consumer, 3)
            assert {1, 3} <= {j.payload["n"] for j in got}
            for job in got:
                await job.ack()
        async with queue.dead_letter_queue() as dlq, dlq.consume() as dead:
            left = await take_one(dead)
            await left.ack()
            await assert_nothing_more(dead, wait=0.2)


async def test_cancel_takes_a_scheduled_job_back(backend: Backend) -> None:
    queue = await backend.make_queue()
    async with queue:
        now = await queue.push(Job("now", {}))
        with pytest.raises(UnsupportedFeature):
            await now.cancel()
        later = await queue.push(Job("later", {}, delay=0.6))
        assert later.cancellable
        if not backend.cancels:
            with pytest.raises(UnsupportedFeature):
                await later.cancel()
            return
        assert await later.cancel() is True
        assert await later.cancel() is False
        async with queue.consume() as consumer:
            first = await take_one(consumer)
            assert first.name == "now"
            await first.ack()
            await asyncio.sleep(0.8)
            await assert_nothing_more(consumer, wait=0.2)


async def test_a_job_past_its_ttl_is_dropped(backend: Backend) -> None:
    queue = await backend.make_queue()
    async with queue:
        await queue.push(Job("stale", {}, ttl=1))
        await queue.push(Job("fresh", {}))
        await asyncio.sleep(1.3)
        async with queue.consume() as consumer:
            first = await take_one(consumer)
            await first.ack()
            if not backend.expires:  # the example brokers keep it: documented, not hidden
                assert first.name == "stale"
                return
            assert first.name == "fresh"
            await assert_nothing_more(consumer, wait=0.2)
