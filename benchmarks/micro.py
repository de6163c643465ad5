"""Per-job CPU floors of the pieces of amqp1q's push and consume paths (issue 17).

Each piece runs alone in this process, with no broker and no socket, over N jobs; the table
shows its CPU µs per job (the best of --repeat runs, process_time). Where a piece needs a peer,
proton's engine is wired back to back with a second engine in the same process, as the unit
tests do (tests/unit/proton/test_engine.py), and only the client side's calls are timed. Where
a piece is a layer (the facade over an adapter, the adapter over a sender), it runs over a stub
of the layer below that answers at once, and the stub's own cost is measured too, so the
difference is the layer's.

These are floors, not predictions: a piece alone runs with warm caches; inside a benchmark the
same work costs more (the loop, the socket and the other pieces evict each other). They say
where the µs of a job go, and what a change to one piece can save at most.

    python benchmarks/micro.py                    # every piece, 20,000 jobs, best of 5
    python benchmarks/micro.py --only push        # pieces whose name starts with "push"

amqp1q's internals are imported by name (amqp1q.adapters.proton._engine, ...): when they move,
this script moves with them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))  # this checkout first

from amqp1q import Job, JobQueue
from amqp1q._adapter import ACK, Incoming
from amqp1q._job import Receipt, new_job_id
from amqp1q.adapters.proton._brokers import profile_named
from amqp1q.adapters.proton._codec import encode_job
from amqp1q.adapters.proton._engine import Engine
from amqp1q.adapters.proton._incoming import decode_delivery
from amqp1q.adapters.proton._links import (
    ACCEPTED,
    Delivery,
    DeliveryOutcome,
    Link,
    ReceiverLink,
    SenderLink,
)
from amqp1q.adapters.proton._sending import Sender

PAYLOAD = b"x" * 1024
BATCH = 10  # messages per write / disposition: the Qpid C++ broker's credit window
IN_FLIGHT = 1000

# -- an engine pair -----------------------------------------------------------------------------


class Peer:
    """The server engine's owner: opens what the client opens, keeps what it receives."""

    def __init__(self) -> None:
        self.links: list[Link] = []
        self.received: list[Delivery] = []

    def on_remote_open(self, engine: Engine) -> None:
        if engine.server:
            engine.open()

    def on_remote_close(self, engine: Engine, condition: Any) -> None:
        pass

    def on_transport_error(self, engine: Engine, condition: Any) -> None:
        pass

    def on_link_remote_open(self, engine: Engine, link: Link) -> None:
        self.links.append(link)
        wrapper = link.wrapper
        if link.is_sender:
            wrapper.source.address = link.remote_source_address
        else:
            wrapper.target.address = link.remote_target_address
            assert isinstance(link, ReceiverLink)
            link.on_message = lambda delivery, body: self.received.append(delivery)
        link.open()


def pump(a: Engine, b: Engine) -> None:
    """Move bytes both ways until both engines are quiet (the unit tests' helper, again)."""
    quiet = 0
    while quiet < 2:
        src, dst = (a, b) if quiet % 2 == 0 else (b, a)
        out = src.data_to_send()
        quiet = quiet + 1 if not out else 0
        if out:
            dst.receive_data(out)
            a, b = b, a


def engine_pair() -> tuple[Engine, Engine, Peer]:
    peer = Peer()
    client = Engine(Peer(), container_id="client", sasl=False)
    server = Engine(peer, server=True, container_id="server", sasl=False)
    client.open()
    pump(client, server)
    return client, server, peer


def attached(client: Engine, server: Engine, peer: Peer, link: Link) -> Link:
    """Attach ``link`` (opened on the client); the server's end of it."""
    pump(client, server)
    return peer.links[-1]


def sender_pair(credit: int) -> tuple[Engine, Engine, Peer, SenderLink, ReceiverLink]:
    client, server, peer = engine_pair()
    link = client.open_sender("q")
    remote = attached(client, server, peer, link)
    assert isinstance(remote, ReceiverLink)
    remote.flow(credit)
    pump(client, server)
    return client, server, peer, link, remote


def accept_all(peer: Peer) -> None:
    for delivery in peer.received:
        delivery.settle(ACCEPTED)
    peer.received.clear()


# -- the pieces: each returns CPU seconds for n jobs --------------------------------------------

Piece = Callable[[int], float]
PIECES: dict[str, tuple[str, Piece]] = {}


def piece(name: str, what: str) -> Callable[[Piece], Piece]:
    def register(func: Piece) -> Piece:
        PIECES[name] = (what, func)
        return func

    return register


def cpu(func: Callable[[], Any]) -> float:
    gc.collect()
    t0 = time.process_time()
    func()
    return time.process_time() - t0


def run_async(make: Callable[[], Awaitable[float]]) -> float:
    async def main() -> float:
        return await make()

    return asyncio.run(main())


@piece("push.job", "Job('bench', 1 KiB bytes): validation, payload, a uuid4 id")
def _job(n: int) -> float:
    return cpu(lambda: [Job("bench", PAYLOAD) for _ in range(n)])


@piece("push.job.id", "  of which new_job_id() (uuid4: os.urandom, str)")
def _job_id(n: int) -> float:
    return cpu(lambda: [new_job_id() for _ in range(n)])


@piece("push.encode", "encode_job: the message's bytes")
def _encode(n: int) -> float:
    jobs = [Job("bench", PAYLOAD) for _ in range(n)]
    return cpu(lambda: [encode_job(job, priority=0, attempt=1) for job in jobs])


@piece("push.engine.send", "SenderLink.send + data_to_send per 10 (proton: transfer frames)")
def _engine_send(n: int) -> float:
    client, server, _, link, _ = sender_pair(n + 10)
    payloads = [encode_job(Job("bench", PAYLOAD)) for _ in range(n)]
    spent = 0.0
    for first in range(0, n, BATCH):
        t0 = time.process_time()
        for payload in payloads[first : first + BATCH]:
            link.send(payload, None)
        out = client.data_to_send()
        spent += time.process_time() - t0
        server.receive_data(out)
    return spent


@piece("push.engine.outcome", "a ranged disposition of 10 read: receive_data, events, callbacks")
def _engine_outcome(n: int) -> float:
    client, server, peer, link, _ = sender_pair(n + 10)
    done: list[DeliveryOutcome] = []
    spent = 0.0
    payload = encode_job(Job("bench", PAYLOAD))
    for _ in range(0, n, BATCH):
        for _ in range(BATCH):
            link.send(payload, done.append)
        server.receive_data(client.data_to_send())
        accept_all(peer)
        out = server.data_to_send()
        t0 = time.process_time()
        client.receive_data(out)
        spent += time.process_time() - t0
    assert len(done) >= n
    return spent


@piece("push.engine.both", "  the two together, with the 10-message credit top-up the peer sends")
def _engine_both(n: int) -> float:
    client, server, peer, link, remote = sender_pair(BATCH)
    done: list[DeliveryOutcome] = []
    payload = encode_job(Job("bench", PAYLOAD))
    spent = 0.0
    for _ in range(0, n, BATCH):
        t0 = time.process_time()
        for _ in range(BATCH):
            link.send(payload, done.append)
        out = client.data_to_send()
        spent += time.process_time() - t0
        server.receive_data(out)
        accept_all(peer)
        remote.flow(BATCH)
        out = server.data_to_send()
        t0 = time.process_time()
        client.receive_data(out)
        spent += time.process_time() - t0
    return spent


async def _tasks_awaiting(n: int, body: Callable[[asyncio.Future[Any]], Awaitable[Any]]) -> float:
    """n tasks, IN_FLIGHT at a time, each running ``body(future)``; the futures are resolved
    BATCH at a time, one loop turn after another, as outcomes arrive from a socket."""
    loop = asyncio.get_running_loop()
    pending: list[asyncio.Future[Any]] = []
    gc.collect()
    t0 = time.process_time()
    for first in range(0, n, IN_FLIGHT):
        futures = [loop.create_future() for _ in range(min(IN_FLIGHT, n - first))]
        tasks = [asyncio.create_task(body(f)) for f in futures]
        pending = futures
        for start in range(0, len(pending), BATCH):
            await asyncio.sleep(0)
            for future in pending[start : start + BATCH]:
                future.set_result(None)
        await asyncio.gather(*tasks)
    return time.process_time() - t0


@piece("push.task", "a task per push awaiting one future, resolved 10 a loop turn")
def _task(n: int) -> float:
    async def body(future: asyncio.Future[Any]) -> None:
        await future

    return run_async(lambda: _tasks_awaiting(n, body))


@piece("push.timeout", "  + asyncio.timeout(30) around the await, 1,000 live at once")
def _timeout(n: int) -> float:
    async def body(future: asyncio.Future[Any]) -> None:
        async with asyncio.timeout(30):
            await future

    return run_async(lambda: _tasks_awaiting(n, body))


@piece("push.timeout.one", "  + one loop.call_at handle per push, no heap (cancelled at once)")
def _call_at(n: int) -> float:
    async def body(future: asyncio.Future[Any]) -> None:
        handle = asyncio.get_running_loop().call_at(1e12, lambda: None)
        handle.cancel()
        await future

    return run_async(lambda: _tasks_awaiting(n, body))


class StubAdapter:
    """Answers every send at once (no suspension): the layer under the facade, for its cost."""

    queue = address = display = "stub"

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def send(self, jobs: list[Job], default_priority: int) -> list[Any]:
        return [Receipt(job_id=job.id, queue="stub") for job in jobs]


async def _each(n: int, call: Callable[[Job], Awaitable[Any]]) -> float:
    jobs = [Job("bench", PAYLOAD) for _ in range(n)]
    gc.collect()
    t0 = time.process_time()
    for job in jobs:
        await call(job)
    return time.process_time() - t0


@piece("push.facade", "JobQueue.push over an adapter that answers at once (the facade's share)")
def _facade(n: int) -> float:
    async def main() -> float:
        async with JobQueue(StubAdapter()) as queue:  # type: ignore[arg-type]
            return await _each(n, queue.push)

    return asyncio.run(main())


@piece("push.facade.stub", "  the stub adapter's send alone (subtract it)")
def _facade_stub(n: int) -> float:
    stub = StubAdapter()
    return run_async(lambda: _each(n, lambda job: stub.send([job], 0)))


class InstantSender:
    """A Sender whose outcomes are known at once: ProtonAdapter.send's own work, alone."""

    alive = True
    has_room = True
    max_message_size = 0
    accepted = DeliveryOutcome(ACCEPTED)

    async def wait_for_room(self) -> None:
        pass

    def send(self, payload: bytes) -> asyncio.Future[DeliveryOutcome]:
        future = asyncio.get_running_loop().create_future()
        future.set_result(self.accepted)
        return future


def stub_proton_adapter() -> Any:
    from amqp1q._factory import AdapterOptions
    from amqp1q._urls import parse_url
    from amqp1q.adapters.proton.adapter import ProtonAdapter

    endpoint = parse_url("amqp://127.0.0.1:1/q")
    adapter = ProtonAdapter(endpoint, AdapterOptions(queue="q"), "q")  # type: ignore[arg-type]
    adapter._profile = profile_named("generic")
    adapter._address = "q"
    adapter._publisher._senders["q"] = InstantSender()  # type: ignore[assignment]
    return adapter


@piece("push.adapter.one", "ProtonAdapter.send([job]) over a sender that answers at once")
def _adapter_one(n: int) -> float:
    adapter = stub_proton_adapter()
    return run_async(lambda: _each(n, lambda job: adapter.send([job], 0)))


@piece("push.adapter.many", "  the same, 1,000 jobs a call (push_many's way)")
def _adapter_many(n: int) -> float:
    adapter = stub_proton_adapter()

    async def main() -> float:
        jobs = [Job("bench", PAYLOAD) for _ in range(n)]
        gc.collect()
        t0 = time.process_time()
        for first in range(0, n, 1000):
            await adapter.send(jobs[first : first + 1000], 0)
        return time.process_time() - t0

    return run_async(main)


@piece("push.sender", "Sender.send + its future resolved (window bookkeeping, no engine)")
def _sender(n: int) -> float:
    class Link:
        alive = True
        credit = 1 << 30

        def __init__(self) -> None:
            self.callbacks: list[Callable[[DeliveryOutcome], None]] = []

        def send(self, payload: bytes, callback: Callable[[DeliveryOutcome], None]) -> None:
            self.callbacks.append(callback)

    async def main() -> float:
        link = Link()
        sender = Sender(link, window=1 << 30, on_dead=lambda c: RuntimeError())  # type: ignore[arg-type]
        outcome = DeliveryOutcome(ACCEPTED)
        gc.collect()
        t0 = time.process_time()
        for _ in range(n):
            sender.send(PAYLOAD)
        for callback in link.callbacks:
            callback(outcome)
        return time.process_time() - t0

    return run_async(main)


# -- consume ------------------------------------------------------------------------------------


def receiver_pair(n: int) -> tuple[Engine, Engine, ReceiverLink, SenderLink, list[Any]]:
    """A client receiver link with ``n`` credit, the server's sender, what the client got."""
    client, server, peer = engine_pair()
    link = client.open_receiver("q")
    got: list[Any] = []
    link.on_message = lambda delivery, payload: got.append((delivery, payload))
    remote = attached(client, server, peer, link)
    assert isinstance(remote, SenderLink)
    link.flow(n)
    pump(client, server)
    return client, server, link, remote, got


@piece("consume.engine.receive", "100 transfers read: receive_data, a Delivery and a copy each")
def _engine_receive(n: int) -> float:
    client, server, _, remote, _ = receiver_pair(n)
    payload = encode_job(Job("bench", PAYLOAD))
    spent = 0.0
    for _ in range(0, n, 100):
        for _ in range(100):
            remote.send(payload, lambda outcome: None)
        out = server.data_to_send()
        t0 = time.process_time()
        client.receive_data(out)
        spent += time.process_time() - t0
    return spent


@piece("consume.decode", "decode_delivery: the message into an Incoming")
def _decode(n: int) -> float:
    payload = encode_job(Job("bench", PAYLOAD))
    return cpu(lambda: [decode_delivery(payload, None) for _ in range(n)])


@piece("consume.engine.settle", "Delivery.settle(ACCEPTED), 64 at a time, + data_to_send")
def _engine_settle(n: int) -> float:
    client, server, _, remote, got = receiver_pair(n)
    payload = encode_job(Job("bench", PAYLOAD))
    for _ in range(n):
        remote.send(payload, lambda outcome: None)
    pump(client, server)
    deliveries = [delivery for delivery, _ in got]
    spent = 0.0
    for first in range(0, n, 64):
        t0 = time.process_time()
        for delivery in deliveries[first : first + 64]:
            delivery.settle(ACCEPTED)
        out = client.data_to_send()
        spent += time.process_time() - t0
        server.receive_data(out)
    return spent


class StubReceiver:
    """Hands out prepared Incomings at once and settles by doing nothing."""

    def __init__(self, incomings: list[Incoming]) -> None:
        self._incomings = iter(incomings)

    async def open(self) -> None:
        pass

    def flow(self, credit: int) -> None:
        pass

    async def receive(self) -> Incoming | None:
        return next(self._incomings, None)

    def settle(self, incoming: Incoming, settlement: Any) -> None:
        return None

    async def drain(self) -> None:
        pass

    async def close(self) -> None:
        pass


@piece("consume.facade", "async for job in consumer: await job.ack() over a receiver at once")
def _consume_facade(n: int) -> float:
    from amqp1q._consumer import Consumer

    payload = encode_job(Job("bench", PAYLOAD))
    incomings = [decode_delivery(payload, None)[0] for _ in range(n)]

    async def main() -> float:
        async with JobQueue(StubAdapter(), prefetch=100) as queue:  # type: ignore[arg-type]
            receiver = StubReceiver(incomings)
            consumer = Consumer(
                queue,
                receiver,  # type: ignore[arg-type]
                queue._hooks,
                prefetch=100,
                auto_ack=False,
            )
            gc.collect()
            t0 = time.process_time()
            async with consumer:
                async for job in consumer:
                    await job.ack()
            return time.process_time() - t0

    return asyncio.run(main())


@piece("consume.facade.stub", "  the stub receiver alone: receive() n times (subtract it)")
def _consume_stub(n: int) -> float:
    payload = encode_job(Job("bench", PAYLOAD))
    incomings = [decode_delivery(payload, None)[0] for _ in range(n)]

    async def main() -> float:
        receiver = StubReceiver(incomings)
        gc.collect()
        t0 = time.process_time()
        while await receiver.receive() is not None:
            receiver.settle(incomings[0], ACK)
        return time.process_time() - t0

    return run_async(main)


# -- the table ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20_000, help="jobs per run (20000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per piece; the best (5)")
    parser.add_argument("--only", default="", help="pieces whose name starts with this")
    args = parser.parse_args()
    print(f"Per-job CPU floors, n = {args.n:,}, best of {args.repeat} (µs per job)\n")
    print("| piece | µs/job | what |")
    print("|---|---:|---|")
    for name, (what, func) in PIECES.items():
        if not name.startswith(args.only):
            continue
        best = min(func(args.n) for _ in range(args.repeat))
        print(f"| {name} | {best / args.n * 1e6:.2f} | {what} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
