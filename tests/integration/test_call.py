"""Request and reply (``queue.call()``) on memory, the embedded broker (plain: a dynamic node;
Service Bus emulation: a reply queue), and RabbitMQ 3.x (a reply queue: it refuses dynamic
sources). What a cancelled call leaves behind is counted from the broker's side."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest

import amqp1q
from amqp1q import (
    CallTimeout,
    Job,
    JobFailed,
    JobQueue,
    Registry,
    RetryPolicy,
    UnsupportedFeature,
    _calls,
)
from amqp1q.adapters.memory import MemoryBroker
from amqp1q.adapters.proton.rabbitmq_setup import RabbitMQManagement
from amqp1q.testing import Broker
from amqp1q.worker import run_worker

from ..cli import run_cli_async
from ..conftest import RABBITMQ_URL
from ..qpid import qpid_broker
from .test_connections import _until
from .test_interop_rhea import Peer

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@attrs.define
class Place:
    """Where the calls go: the queue's URL, the caller's settings, and what the broker says it
    holds (links attached; queues by name) -- None where it cannot say."""

    url: str
    caller: dict[str, Any]
    links: Callable[[], int | None]
    queues: Callable[[], set[str] | None]
    #: The broker's URL without the queue (for ``amqp1q.connect``), and the queue's name.
    base: str = ""
    name: str = "jobs"


@pytest.fixture(params=["memory", "embedded", "servicebus", "servicebus-sessions", "rabbitmq"])
async def place(request: pytest.FixtureRequest) -> AsyncIterator[Place]:
    tag = uuid.uuid4().hex[:10]
    if request.param == "memory":
        broker = MemoryBroker.namespace(f"call-{tag}")
        yield Place(
            f"memory://call-{tag}/jobs",
            {},
            lambda: None,
            lambda: set(broker.queue_names),
            base=f"memory://call-{tag}/",
        )
    elif request.param == "rabbitmq":
        management: RabbitMQManagement = request.getfixturevalue("rabbitmq")
        queue, replies = f"amqp1q-call-{tag}", f"amqp1q-call-{tag}.replies"
        management.setup_job_queue(queue)
        management.setup_reply_queue(replies)

        def consumers() -> int | None:  # the reply link is the reply queue's consumer
            info = management.queue_info(replies)
            return None if info is None else int(info.get("consumers", 0))

        try:
            yield Place(
                f"{RABBITMQ_URL}/{queue}",
                {"reply_queue": replies},
                consumers,
                lambda: None,
                base=RABBITMQ_URL,
                name=queue,
            )
        finally:
            for name in (queue, f"{queue}.dlq", replies):
                management.delete_queue(name)
    else:
        servicebus = request.param.startswith("servicebus")
        async with Broker(servicebus=servicebus) as embedded:
            if servicebus:  # the client's reply queue, made beforehand as on Service Bus
                embedded.declare(f"replies-{tag}", requires_session=request.param.endswith("s"))
            url = embedded.servicebus_connection_string("jobs") if servicebus else embedded.url
            yield Place(
                url if servicebus else f"{url}/jobs",
                {"reply_queue": f"replies-{tag}"} if servicebus else {},
                lambda: embedded.link_count,
                lambda: set(embedded.store.queues),
                base=embedded.servicebus_connection_string() if servicebus else url,
            )


def _registry() -> Registry:
    registry = Registry()

    @registry.handler("add")
    async def add(job: amqp1q.ReceivedJob, payload: dict[str, int]) -> int:
        return payload["a"] + payload["b"]

    @registry.handler("text")
    async def text(job: amqp1q.ReceivedJob) -> str:
        return job.body.decode()

    @registry.handler("boom")
    async def boom(job: amqp1q.ReceivedJob) -> None:
        raise ValueError(f"no good on attempt {job.attempt}")

    return registry


@contextlib.asynccontextmanager
async def worker(place: Place, concurrency: int = 50) -> AsyncIterator[None]:
    queue = JobQueue.from_url(place.url, prefetch=concurrency, retry=RetryPolicy(max_attempts=2))
    await queue.open()
    stop = asyncio.Event()
    running = asyncio.create_task(
        run_worker(_registry(), queue, stop=stop, concurrency=concurrency)
    )
    try:
        yield
    finally:
        stop.set()
        await running


def _link(queue: JobQueue) -> Any:
    """The queue's reply link (its connection's)."""
    return queue.adapter.reply_link()


def _ours() -> set[asyncio.Task[Any]]:
    """The tasks running now but those of azure-servicebus's transport (reads it starts and
    ends by itself)."""
    return {t for t in _others() if "/azure/" not in t.get_coro().cr_code.co_filename}  # type: ignore[union-attr]


def _others() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_a_thousand_concurrent_calls_each_get_their_own_answer(place: Place) -> None:
    async with worker(place), JobQueue.from_url(place.url, **place.caller) as caller:
        answers = await asyncio.gather(
            *(caller.call(Job("add", {"a": i, "b": 1000}), timeout=60) for i in range(1000))
        )
    assert answers == [i + 1000 for i in range(1000)]


async def test_a_failing_handler_gives_job_failed_with_the_remote_error(place: Place) -> None:
    async with worker(place), JobQueue.from_url(place.url, **place.caller) as caller:
        with pytest.raises(JobFailed) as failed:
            await caller.call(Job("boom"), timeout=30)
    assert failed.value.error_type == "ValueError"
    assert failed.value.error_message == "no good on attempt 2"  # its last attempt
    assert failed.value.queue == caller.name


async def test_a_stopped_worker_gives_call_timeout(place: Place) -> None:
    async with worker(place), JobQueue.from_url(place.url, **place.caller) as caller:
        assert await caller.call(Job("add", {"a": 1, "b": 2}), timeout=30) == 3
    async with JobQueue.from_url(place.url, **place.caller) as caller:  # the worker stopped
        job = Job("add", {"a": 1, "b": 2})
        with pytest.raises(CallTimeout) as timed_out:
            await caller.call(job, timeout=0.5)
        assert timed_out.value.job_id == job.id
        assert isinstance(timed_out.value, TimeoutError)


async def test_a_cancelled_call_leaves_nothing_behind(place: Place) -> None:
    tasks, links, queues = _others(), place.links(), place.queues()
    async with JobQueue.from_url(place.url, **place.caller) as caller:
        held: tuple[set[asyncio.Task[Any]], int | None] | None = None
        for _ in range(2):  # the second leaves as much as the first: nothing per call
            call = asyncio.create_task(caller.call(Job("add", {"a": 2, "b": 3}), timeout=60))
            await _until(lambda: any(r.pending for r in _calls._routers.values()))
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            router = _calls._routers[_link(caller)]
            assert router.pending == 0
            # What stays is the connection's: its one reply link and reader (and on Service
            # Bus the SDK's sender and receiver tasks), shared by every call.
            assert router.task in _others()
            if held is None:
                held = (_ours(), place.links())
            assert (_ours(), place.links()) == held
        # The requests are still queued: a worker answers them late, and the replies are
        # dropped quietly -- the next call gets its own answer.
        async with worker(place):
            assert await caller.call(Job("add", {"a": 20, "b": 22}), timeout=30) == 42
    await _until(lambda: place.links() == links)  # the reply link is gone
    after = place.queues()
    if after is not None and queues is not None:  # a temporary reply queue has gone too
        assert {q for q in after - queues if not q.startswith(place.name)} == set()
    await _until(lambda: _others() == tasks)


async def test_a_client_has_one_reply_link_for_all_its_queues(place: Place) -> None:
    async with worker(place), amqp1q.connect(place.base, **place.caller) as client:
        first, second = client.queue(place.name), client.queue(place.name)
        calls = [
            q.call(Job("add", {"a": i, "b": 1}), timeout=30)
            for i, q in enumerate([first, second] * 5)
        ]
        assert await asyncio.gather(*calls) == [i + 1 for i in range(10)]
        assert _link(first) is _link(second)


async def test_a_hand_settled_consumer_replies_with_job_reply(place: Place) -> None:
    @attrs.frozen
    class Sum:
        total: int
        by: str

    async def answer(queue: JobQueue) -> None:
        async with queue.consume() as consumer:
            job = await consumer.receive()
            assert job is not None
            assert job.reply_to is not None
            assert job.wants_reply
            assert await job.reply({"total": sum(job.payload), "by": "hand"})
            assert not job.wants_reply
            await job.ack()

    async with (
        JobQueue.from_url(place.url) as worker_queue,
        JobQueue.from_url(place.url, **place.caller) as caller,
    ):
        answering = asyncio.create_task(answer(worker_queue))
        result = await caller.call(Job("sum", [1, 2, 3]), timeout=30, result_type=Sum)
        await answering
    assert result == Sum(6, "hand")


async def test_a_job_without_reply_to_is_not_answered(place: Place) -> None:
    async with JobQueue.from_url(place.url) as queue:
        await queue.push(Job("plain", {}))
        async with queue.consume() as consumer:
            job = await consumer.receive()
            assert job is not None
            assert job.reply_to is None
            assert not job.wants_reply
            assert await job.reply("ignored") is False
            await job.ack()


@pytest.mark.node
@pytest.mark.parametrize("where", ["embedded", "rabbitmq"])
async def test_a_rhea_client_calls_an_amqp1q_worker(
    where: str, request: pytest.FixtureRequest
) -> None:
    """rhea sends requests with reply-to (a dynamic node on the embedded broker; a reply queue
    on RabbitMQ 3.x) and reads the worker's replies: correlation-id = its message id."""
    async with contextlib.AsyncExitStack() as stack:
        if where == "rabbitmq":
            management: RabbitMQManagement = request.getfixturevalue("rabbitmq")
            tag = uuid.uuid4().hex[:10]
            queue, replies = f"amqp1q-rhea-call-{tag}", f"amqp1q-rhea-call-{tag}.replies"
            management.setup_job_queue(queue)
            management.setup_reply_queue(replies)
            stack.callback(management.delete_queue, replies)
            stack.callback(management.delete_queue, f"{queue}.dlq")
            stack.callback(management.delete_queue, queue)
            peer = Peer(f"{RABBITMQ_URL}/{queue}", queue, f"/amq/queue/{queue}")
            reply_address = f"/amq/queue/{replies}"
        else:
            embedded = await stack.enter_async_context(Broker())
            peer = Peer(f"{embedded.url}/jobs", "jobs", "jobs")
            reply_address = "dynamic"
        place = Place(peer.url, {}, lambda: None, lambda: None)
        await stack.enter_async_context(worker(place))
        summary = json.loads(await peer.node("call.js", reply_address, "20"))
    assert summary["errors"] == []
    assert summary["replies"] == {f"call-{i}": str(i + 1) for i in range(20)}
    assert set(summary["content_types"].values()) == {"application/json"}


async def test_rabbitmq_refuses_a_dynamic_reply_node_so_a_client_names_its_reply_queue(
    rabbitmq: RabbitMQManagement,
) -> None:
    """RabbitMQ 3.10's AMQP 1.0 plugin answers a dynamic source with amqp:not-implemented; the
    call says to give the client a reply queue, which ``setup-rabbitmq --reply-queue`` makes."""
    tag = uuid.uuid4().hex[:10]
    queue, replies = f"amqp1q-call-{tag}", f"amqp1q-call-{tag}.replies"
    rabbitmq.setup_job_queue(queue)
    try:
        async with JobQueue.from_url(f"{RABBITMQ_URL}/{queue}") as caller:
            with pytest.raises(UnsupportedFeature, match="--reply-queue") as refused:
                await caller.call(Job("add", {"a": 1, "b": 1}), timeout=10)
        assert refused.value.condition == "amqp:not-implemented"
        result = await run_cli_async("setup-rabbitmq", "--reply-queue", replies)
        assert result[0] == 0, result
        assert f"declared the reply queue {replies}" in result[1]
        info = rabbitmq.queue_info(replies)
        assert info is not None
        assert info["durable"] is True
        async with worker(Place(f"{RABBITMQ_URL}/{queue}", {}, lambda: None, lambda: None)):
            async with JobQueue.from_url(f"{RABBITMQ_URL}/{queue}", reply_queue=replies) as caller:
                assert await caller.call(Job("add", {"a": 1, "b": 1}), timeout=30) == 2
    finally:
        for name in (queue, f"{queue}.dlq", replies):
            rabbitmq.delete_queue(name)


async def test_service_bus_needs_a_reply_queue() -> None:
    async with Broker(servicebus=True) as embedded:
        url = embedded.servicebus_connection_string("jobs")
        async with JobQueue.from_url(url) as caller:
            with pytest.raises(UnsupportedFeature, match="reply_queue=NAME"):
                await caller.call(Job("add", {"a": 1, "b": 1}), timeout=10)


@pytest.mark.parametrize("kind", ["c", "cpp"])
async def test_qpid_example_brokers_answer_on_a_reply_queue(kind: str) -> None:
    """An unknown broker is not asked for a dynamic node (Qpid Proton's C example broker drops
    the connection on one): a reply queue of the client's is needed, and works."""
    async with qpid_broker(kind) as qpid:
        url = f"{qpid.url}/jobs"
        async with JobQueue.from_url(url) as caller:
            with pytest.raises(UnsupportedFeature, match="reply_queue=NAME"):
                await caller.call(Job("add", {"a": 1, "b": 1}), timeout=10)
            assert caller.health() == "connected"  # nothing was asked that drops it
        async with (
            worker(Place(url, {}, lambda: None, lambda: None)),
            JobQueue.from_url(url, reply_queue=f"replies-{uuid.uuid4().hex[:8]}") as caller,
        ):
            calls = [caller.call(Job("add", {"a": i, "b": 2}), timeout=30) for i in range(100)]
            assert await asyncio.gather(*calls) == [i + 2 for i in range(100)]


async def test_sync_handlers_middleware_and_auto_ack_workers_reply_too() -> None:
    seen: list[str] = []

    async def timing(job: amqp1q.ReceivedJob, call_next: amqp1q.CallNext) -> None:
        seen.append(job.name)
        await call_next()

    registry = Registry(middleware=[timing])

    @registry.handler("double")
    def double(job: amqp1q.ReceivedJob) -> int:  # run in a thread
        return int(job.payload) * 2

    url = f"memory://call-{uuid.uuid4().hex[:8]}/jobs"
    for auto_ack in (False, True):
        served = JobQueue.from_url(url, auto_ack=auto_ack)
        await served.open()
        stop = asyncio.Event()
        running = asyncio.create_task(run_worker(registry, served, stop=stop))
        async with JobQueue.from_url(url) as caller:
            assert await caller.call(Job("double", 21), timeout=10) == 42
        stop.set()
        await running
    assert seen == ["double", "double"]


async def test_a_reply_to_a_caller_gone_is_dropped_and_the_job_not_run_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The caller cancelled and closed: its dynamic node went with its link. The worker's reply
    is refused (a dynamic node is not made again by use), logged, and the job acked."""
    async with Broker() as embedded:
        url = f"{embedded.url}/jobs"
        before = set(embedded.store.queues)
        async with JobQueue.from_url(url) as caller:
            call = asyncio.create_task(caller.call(Job("add", {"a": 1, "b": 1}), timeout=30))
            await _until(lambda: embedded.queue("jobs").ready_count == 1)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        await _until(lambda: embedded.link_count == 0)
        async with worker(Place(url, {}, lambda: None, lambda: None)):
            await _until(lambda: "could not send the reply" in caplog.text)
            await _until(lambda: len(embedded.queue("jobs")) == 0)
        assert len(embedded.queue("jobs/$deadletterqueue")) == 0  # not failed, not retried
        assert set(embedded.store.queues) - before <= {"jobs", "jobs/$deadletterqueue"}


@pytest.mark.parametrize("place", ["embedded", "servicebus", "rabbitmq"], indirect=True)
async def test_a_roadrunner_format_request_is_answered(place: Place) -> None:
    """A request in RoadRunner's envelope (no message id of its own on the wire): the reply
    carries the job's id, which the caller waits for."""
    async with (
        worker(place),
        JobQueue.from_url(place.url, wire_format="roadrunner", **place.caller) as caller,
    ):
        assert await caller.call(Job("text", b"hello"), timeout=30) == "hello"
        with pytest.raises(JobFailed) as failed:  # RoadRunner's payload is text: not typed
            await caller.call(Job("add", {"a": 2, "b": 2}), timeout=30)
        assert failed.value.error_type == "PayloadValidationError"


async def test_closing_a_queue_on_the_same_connection_leaves_the_reply_link_up(
    place: Place,
) -> None:
    """A queue's dead-letter queue shares its connection: closing it closes neither the
    connection nor its reply link; calls go on."""
    async with worker(place), JobQueue.from_url(place.url, **place.caller) as caller:
        assert await caller.call(Job("add", {"a": 1, "b": 1}), timeout=30) == 2
        link = _link(caller)
        async with caller.dead_letter_queue():
            pass
        assert await caller.call(Job("add", {"a": 2, "b": 2}), timeout=30) == 4
        assert _link(caller) is link


async def test_a_dropped_connection_fails_the_calls_waiting_and_the_next_call_works() -> None:
    async with Broker() as embedded:
        url = f"{embedded.url}/jobs"
        async with JobQueue.from_url(url) as caller:
            waiting = asyncio.create_task(caller.call(Job("add", {"a": 1, "b": 1}), timeout=30))
            await _until(lambda: embedded.queue("jobs").ready_count == 1)
            old = _link(caller)
            embedded.drop_connections()
            with pytest.raises(amqp1q.ConnectionLost):
                await waiting
            async with worker(Place(url, {}, lambda: None, lambda: None)):
                assert await caller.call(Job("add", {"a": 2, "b": 3}), timeout=30) == 5
            assert _link(caller) is not old  # a new dynamic node, on the new connection


async def test_service_bus_callers_share_a_reply_queue_with_a_session_each() -> None:
    """Microsoft's pattern: one reply queue that requires sessions; each client reads its own
    session, named in its requests' reply-to-session-id, and the worker answers to it."""
    async with Broker(servicebus=True) as embedded:
        embedded.declare("replies", requires_session=True)
        url = embedded.servicebus_connection_string("jobs")
        place = Place(url, {}, lambda: None, lambda: None)
        async with (
            worker(place),
            JobQueue.from_url(url, reply_queue="replies") as first,
            JobQueue.from_url(url, reply_queue="replies") as second,
        ):
            calls = [
                q.call(Job("add", {"a": i, "b": 1}), timeout=60)
                for i in range(100)
                for q in (first, second)
            ]
            answers = await asyncio.gather(*calls)
            assert answers == [i + 1 for i in range(100) for _ in (0, 1)]
            sessions = {_link(first).session_id, _link(second).session_id}
            assert None not in sessions
            assert len(sessions) == 2


async def test_the_azure_sdk_calls_an_amqp1q_worker_with_a_reply_session() -> None:
    """azure-servicebus as the caller, as Microsoft documents request-reply: the request has
    reply_to and reply_to_session_id; the reply comes to that session of the reply queue,
    correlation_id = the request's message id."""
    from azure.servicebus import ServiceBusMessage
    from azure.servicebus.aio import ServiceBusClient

    async with Broker(servicebus=True) as embedded:
        embedded.declare("replies", requires_session=True)
        conn = embedded.servicebus_connection_string()
        async with (
            worker(
                Place(embedded.servicebus_connection_string("jobs"), {}, lambda: None, lambda: None)
            ),
            ServiceBusClient.from_connection_string(conn) as sdk,
        ):
            async with sdk.get_queue_sender("jobs") as sender:
                await sender.send_messages(
                    ServiceBusMessage(
                        b'{"a": 20, "b": 22}',
                        message_id="sdk-call-1",
                        subject="add",
                        content_type="application/json",
                        reply_to="replies",
                        reply_to_session_id="sdk-caller",
                    )
                )
            async with sdk.get_queue_receiver("replies", session_id="sdk-caller") as receiver:
                [reply] = await receiver.receive_messages(max_message_count=1, max_wait_time=20)
                await receiver.complete_message(reply)
    assert reply.correlation_id == "sdk-call-1"
    assert reply.session_id == "sdk-caller"
    assert b"".join(reply.body) == b"42"


async def test_two_calls_of_one_job_id_at_once_are_refused() -> None:
    url = f"memory://call-{uuid.uuid4().hex[:8]}/jobs"
    async with JobQueue.from_url(url) as caller:
        job = Job("add", {"a": 1, "b": 1})
        first = asyncio.create_task(caller.call(job, timeout=0.5))
        await _until(lambda: any(r.pending for r in _calls._routers.values()))
        with pytest.raises(amqp1q.InvalidJob, match="id of its own"):
            await caller.call(job, timeout=0.5)
        with pytest.raises(CallTimeout):
            await first  # the first call is not disturbed by the second


async def test_a_worker_keeps_a_bounded_number_of_reply_links(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each caller's dynamic node takes a sender link on the worker's connection; those of the
    callers answered longest ago are detached beyond the bound."""
    from amqp1q.adapters.proton import _publishing

    monkeypatch.setattr(_publishing, "REPLY_SENDERS", 2)
    async with Broker() as embedded:
        url = f"{embedded.url}/jobs"
        async with worker(Place(url, {}, lambda: None, lambda: None), concurrency=4):
            for n in range(6):  # six callers, one after the other, each its own reply node
                async with JobQueue.from_url(url) as caller:
                    assert await caller.call(Job("add", {"a": n, "b": 0}), timeout=30) == n
            # Left: the worker's receiver and at most two reply senders (not six).
            await _until(lambda: embedded.link_count <= 3)
