"""Ordered processing (``consume(groups=N)``, docs/ordering.md): memory, the embedded broker,
RabbitMQ (a queue with ``x-single-active-consumer``), Qpid Proton's example brokers, and Service
Bus (the emulation's session queue: groups are sessions, held by session receivers).

Ten groups of fifty jobs, pushed interleaved, handled by handlers of random duration that fail
at random (retried by the policy, or by hand): each group's jobs must start one at a time and in
push order -- a job starts only once the one before it has been handled -- while more than one
group is in flight. Then the same through connection cuts (FaultProxy) mid-run: nothing lost,
every group still in order, and a job runs twice only where docs/concepts.md says it may (its
handler was running when the connection was cut; it runs again before its group goes on).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from amqp1q import (
    Amqp1qError,
    DeliveryStale,
    Job,
    JobQueue,
    ReceivedJob,
    ReconnectPolicy,
    RetryPolicy,
)
from amqp1q.testing import FaultProxy

from ..conftest import RABBITMQ_URL
from .conftest import BACKENDS, Backend
from .helpers import take

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

GROUPS = 10
PER_GROUP = 50
IN_FLIGHT = 4
PREFETCH = 3 * IN_FLIGHT
ORDERED = [
    "memory",
    "embedded",
    "rabbitmq",
    "qpid-cpp",
    "qpid-c",
    "servicebus",
]
log = logging.getLogger(__name__)
RETRY = RetryPolicy(max_attempts=6, initial_delay=0.005, max_delay=0.02)


class Flaky(Exception):
    """A handler's random failure: retried by the policy."""


class Ledger:
    """What the handlers saw, checked as it happens: per group, the jobs handled so far. (A
    handler's failed assert would only be retried: what is wrong is noted, and asserted after.)"""

    def __init__(self, *, duplicates_allowed: bool) -> None:
        self.done = dict.fromkeys(range(GROUPS), 0)  # jobs of each group handled, in order
        self.running: set[int] = set()
        self.most_running = 0
        self.reruns = 0
        self.retries = 0
        self._duplicates_allowed = duplicates_allowed
        self.finished = asyncio.Event()
        self.wrong: list[str] = []

    def start(self, job: ReceivedJob) -> tuple[int, int]:
        group, index = job.payload["group"], job.payload["index"]
        if job.group != f"g{group}":
            self.wrong.append(f"job {index} of group {group} came with group {job.group!r}")
        if group in self.running:
            self.wrong.append(f"two jobs of group {group} in hand at once")
        if self._duplicates_allowed and index < self.done[group]:
            # Its handler ran when the cut came, so it could not be settled: it runs again, and
            # before any later job of its group (one whose ack was lost is acked again instead).
            self.reruns += 1
            if index != self.done[group] - 1:
                self.wrong.append(
                    f"group {group}: job {index} ran again after {self.done[group]} were handled"
                )
        elif index != self.done[group]:
            self.wrong.append(
                f"group {group}: job {index} started after {self.done[group]} were handled"
            )
        self.running.add(group)
        self.most_running = max(self.most_running, len(self.running))
        return group, index

    def handled(self, group: int, index: int) -> None:
        self.running.discard(group)
        self.done[group] = max(self.done[group], index + 1)
        if sum(self.done.values()) == GROUPS * PER_GROUP:
            self.finished.set()

    def failed(self, group: int) -> None:
        self.running.discard(group)
        self.retries += 1


def interleaved() -> list[Job]:
    return [
        Job("step", {"group": group, "index": index}, group=f"g{group}")
        for index in range(PER_GROUP)
        for group in range(GROUPS)
    ]


async def run_handlers(queue: JobQueue, ledger: Ledger, rng: random.Random) -> None:
    """Consume with ``groups=IN_FLIGHT`` until every job was handled, a task per job."""

    async def handle(job: ReceivedJob) -> None:
        try:
            async with job.process():
                group, index = ledger.start(job)
                await asyncio.sleep(rng.random() * 0.004)
                if job.attempt < 3 and rng.random() < 0.12:
                    ledger.failed(group)
                    raise Flaky(f"job {index} of group {group}, attempt {job.attempt}")
                if job.attempt == 1 and rng.random() < 0.04:
                    ledger.failed(group)
                    await job.retry(delay=0.01)  # by hand, with a delay: the group waits for it
                    return
                ledger.handled(group, index)
        except DeliveryStale:
            pass  # its link died under it (a cut): the broker redelivers it

    async with queue.consume(groups=IN_FLIGHT, prefetch=PREFETCH) as consumer:
        async with anyio.create_task_group() as tasks:
            while not ledger.finished.is_set():
                job = await consumer.receive(timeout=0.2)
                if job is not None:
                    tasks.start_soon(handle, job)


@pytest.fixture(params=ORDERED)
async def ordered(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    instance = BACKENDS[request.param]()
    try:
        yield instance
    finally:
        await instance.cleanup()


async def test_ten_groups_come_out_in_order_with_several_in_flight(ordered: Backend) -> None:
    queue = await ordered.make_ordered_queue(retry=RETRY)
    ledger = Ledger(duplicates_allowed=False)
    async with queue:
        await queue.push_many(interleaved())
        with anyio.fail_after(90):
            await run_handlers(queue, ledger, random.Random(14))
    log.warning(
        "ordering on %s: %d retries, at most %d groups in flight",
        ordered.name,
        ledger.retries,
        ledger.most_running,
    )
    assert ledger.wrong == []
    assert ledger.done == dict.fromkeys(range(GROUPS), PER_GROUP)
    assert ledger.most_running > 1, "never more than one group in flight"
    assert ledger.most_running <= IN_FLIGHT
    assert ledger.retries > 0, "no handler failed: the retries were not exercised"


async def test_a_group_retried_with_a_delay_waits_and_others_go_on(ordered: Backend) -> None:
    queue = await ordered.make_ordered_queue(retry=RETRY)
    async with queue:
        await queue.push_many(
            [Job("a", {"n": 1}, group="slow"), Job("a", {"n": 2}, group="slow")]
            + [Job("b", {"n": n}, group="fast") for n in range(3)]
        )
        seen: list[tuple[str, int, int]] = []
        async with queue.consume(groups=2, prefetch=10) as consumer:
            with anyio.fail_after(20):
                while len(seen) < 6:
                    job = await consumer.receive()
                    assert job is not None
                    seen.append((job.name, job.payload["n"], job.attempt))
                    if (job.name, job.payload["n"], job.attempt) == ("a", 1, 1):
                        await job.retry(delay=0.3)
                    else:
                        await job.ack()
    slow = [(n, attempt) for name, n, attempt in seen if name == "a"]
    fast = [n for name, n, _ in seen if name == "b"]
    assert slow == [(1, 1), (1, 2), (2, 1)]  # n=2 waited for n=1's retry
    assert fast == [0, 1, 2]
    # the other group went on while "slow" waited out its delay
    assert seen.index(("b", 2, 1)) < seen.index(("a", 1, 2))


async def test_jobs_without_a_group_are_each_a_group_of_their_own(ordered: Backend) -> None:
    queue = await ordered.make_ordered_queue()
    async with queue:
        if ordered.groups_required:  # a session queue takes no job without a session
            with pytest.raises(Amqp1qError, match="SessionId was not set"):
                await queue.push(Job("free", {"n": 0}))
            return
        await queue.push_many([Job("free", {"n": n}) for n in range(3)])
        async with queue.consume(groups=3, prefetch=3) as consumer:
            with anyio.fail_after(20):
                jobs = [await consumer.receive() for _ in range(3)]  # none settled yet
            assert sorted(job.payload["n"] for job in jobs if job is not None) == [0, 1, 2]
            for job in jobs:
                assert job is not None
                assert job.group is None
                await job.ack()


async def test_closing_gives_back_what_it_held_for_the_next_consumer(ordered: Backend) -> None:
    """What a closing consumer held for its group's turn goes back to the broker: nothing is
    lost, and the next consumer gets it in order where the broker puts a release back in place."""
    queue = await ordered.make_ordered_queue("closing")
    async with queue:
        await queue.push_many([Job("a", {"n": n}, group="a") for n in range(4)])
        async with queue.consume(groups=1, prefetch=4) as consumer:
            first = await take(consumer, 1)
            await first[0].ack()
            second = await take(consumer, 1)
            assert second[0].payload == {"n": 1}
            await second[0].release()  # kept in its group; the consumer holds 1, 2 and 3
        async with queue.consume(groups=1, prefetch=4) as consumer:
            rest = []
            for _ in range(3):
                job = (await take(consumer, 1))[0]
                rest.append(job.payload["n"])
                await job.ack()
    if ordered.release_keeps_order:
        assert rest == [1, 2, 3]
    else:  # released means re-published: to the back of the queue
        assert sorted(rest) == [1, 2, 3]


async def test_a_group_travels_with_its_job_in_both_wire_formats(backend: Backend) -> None:
    for wire_format in ("amqp1q", "roadrunner"):
        queue = await backend.make_queue(f"group-{wire_format}", wire_format=wire_format)
        async with queue:
            await queue.push_many([Job("grouped", {"n": 1}, group="customer-42"), Job("free")])
            async with queue.consume() as consumer:
                jobs = await take(consumer, 2)
                for job in jobs:
                    await job.ack()
        assert {job.name: job.group for job in jobs} == {"grouped": "customer-42", "free": None}
        assert jobs[0].to_job().group == jobs[0].group


# -- a connection cut mid-run -------------------------------------------------------------------

CUT_ON = ["embedded", "rabbitmq", "servicebus"]


@pytest.mark.parametrize("kind", CUT_ON)
async def test_a_cut_mid_run_loses_nothing_and_keeps_every_group_in_order(kind: str) -> None:
    backend = BACKENDS[kind]()
    try:
        direct = await backend.make_ordered_queue()
        async with direct:
            await direct.push_many(interleaved())
        target: tuple[str, int]
        settings: dict[str, Any] = {"queue": direct.name}
        if kind in ("embedded", "servicebus"):
            broker = backend.broker  # type: ignore[attr-defined]
            target = (broker.host, broker.port)
        else:
            target = ("127.0.0.1", 5672)
        ledger = Ledger(duplicates_allowed=True)
        cuts = 0
        async with FaultProxy(*target) as proxy:
            url = proxy.url_for("amqp", userinfo=_userinfo(kind))
            if kind == "servicebus":  # (the SDK opens a connection per sender and receiver)
                url = (
                    f"Endpoint=sb://{proxy.host}:{proxy.port};SharedAccessKeyName=k;"
                    "SharedAccessKey=v;UseDevelopmentEmulator=true"
                )
            queue = JobQueue.from_url(
                url,
                retry=RETRY,
                reconnect=ReconnectPolicy(initial_delay=0.01, max_delay=0.1),
                **settings,
            )
            async with queue:
                handlers = asyncio.create_task(run_handlers(queue, ledger, random.Random(41)))
                with anyio.fail_after(90):
                    for at in (100, 250, 400):
                        cuts += await _cut_at(proxy, ledger, handlers, at)
                    await handlers
    finally:
        await backend.cleanup()
    log.warning(
        "ordering through %d cuts on %s: %d reruns, %d retries, at most %d groups in flight",
        cuts,
        kind,
        ledger.reruns,
        ledger.retries,
        ledger.most_running,
    )
    assert cuts == 3
    assert ledger.wrong == []
    assert ledger.done == dict.fromkeys(range(GROUPS), PER_GROUP)  # nothing lost
    # A rerun is a job in hand when the cut came: at most one per group in flight, per cut.
    assert ledger.reruns <= cuts * IN_FLIGHT
    assert ledger.most_running > 1


async def _cut_at(
    proxy: FaultProxy, ledger: Ledger, handlers: asyncio.Task[None], progress: int
) -> int:
    """Once ``progress`` jobs were handled, cut the connection (1), unless the run ended (0)."""
    while sum(ledger.done.values()) < progress and not handlers.done():  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    while not handlers.done():
        if proxy.cut():
            return 1
        await asyncio.sleep(0.01)  # between connections: try again
    return 0


def _userinfo(kind: str) -> str | None:
    if kind != "rabbitmq":
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(RABBITMQ_URL)
    return f"{parts.username}:{parts.password}"
