"""Reference client: python-qpid-proton's reactor doing the amqp1q benchmark's work.

Push N durable messages (1 KiB data-section body by default) as fast as link credit allows and
count them confirmed once the broker has accepted every one; then receive N with a credit window
of --prefetch and accept each explicitly (auto_accept off). One connection serves both phases;
each phase is timed from the moment its link is created. The address is RabbitMQ's
``/amq/queue/QUEUE`` unless --address names another (Qpid's brokers and amqp1q's take the name).

Prints one JSON line: {"client", "n", "push_per_s", "consume_per_s", "push_cpu_us_per_job",
"consume_cpu_us_per_job"}; CPU is this process's user+sys time for the phase, divided by N.
Between the phases it prints ``#consume`` (the driver reads the broker's CPU time there).

    python benchmarks/clients/proton_reactor.py --url amqp://guest:guest@127.0.0.1:5672 \
        --queue bench-q --n 20000 --prefetch 100 --size 1024
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from proton import Message
from proton.handlers import MessagingHandler
from proton.reactor import Container

PHASE_MARK = "#consume"  # benchmarks/common.py's


class Bench(MessagingHandler):  # type: ignore[misc]
    def __init__(self, url: str, address: str, n: int, prefetch: int, size: int) -> None:
        super().__init__(prefetch=prefetch, auto_accept=False)
        self.url = url
        self.address = address
        self.n = n
        # Every job is the same, so one Message is built once and re-encoded for each send.
        self.message = Message(body=b"x" * size, durable=True, subject="bench")
        self.message.inferred = True  # bytes go out as a data section, not an amqp-value
        self.sent = 0
        self.accepted = 0
        self.received = 0
        self.sender: Any = None
        self.t0 = (0.0, 0.0)
        self.push: tuple[float, float] | None = None
        self.consume: tuple[float, float] | None = None
        self.error: str | None = None

    def _mark(self) -> None:
        self.t0 = (time.perf_counter(), time.process_time())

    def _elapsed(self) -> tuple[float, float]:
        return time.perf_counter() - self.t0[0], time.process_time() - self.t0[1]

    def on_start(self, event: Any) -> None:
        mechanisms = "PLAIN" if urlsplit(self.url).username else "ANONYMOUS"
        self.conn = event.container.connect(self.url, allowed_mechs=mechanisms)

    def on_connection_opened(self, event: Any) -> None:
        self._mark()
        self.sender = event.container.create_sender(event.connection, self.address)

    def on_sendable(self, event: Any) -> None:
        sender = event.sender
        while sender.credit > 0 and self.sent < self.n:
            sender.send(self.message)
            self.sent += 1

    def on_accepted(self, event: Any) -> None:
        self.accepted += 1
        if self.accepted == self.n:
            self.push = self._elapsed()
            print(PHASE_MARK, flush=True)
            event.sender.close()
            self._mark()
            event.container.create_receiver(event.connection, self.address)

    def on_rejected(self, event: Any) -> None:
        self._fail(event, "broker rejected a message")

    def on_released(self, event: Any) -> None:
        self._fail(event, "broker released a message")

    def on_message(self, event: Any) -> None:
        self.accept(event.delivery)
        self.received += 1
        if self.received == self.n:
            self.consume = self._elapsed()
            event.receiver.close()
            event.connection.close()

    def on_transport_error(self, event: Any) -> None:
        cond = event.transport.condition
        self.error = f"transport error: {cond.name}: {cond.description}" if cond else "transport"
        super().on_transport_error(event)

    def on_link_error(self, event: Any) -> None:
        cond = event.link.remote_condition
        self._fail(event, f"link error: {cond.name}: {cond.description}" if cond else "link")

    def on_connection_error(self, event: Any) -> None:
        cond = event.connection.remote_condition
        self._fail(event, f"connection error: {cond.name}: {cond.description}" if cond else "conn")

    def _fail(self, event: Any, why: str) -> None:
        self.error = self.error or why
        event.connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672")
    parser.add_argument("--host", help="overrides the URL's host")
    parser.add_argument("--port", type=int, help="overrides the URL's port")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--address", help="attach here (default: /amq/queue/QUEUE, RabbitMQ's)")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()

    url = urlsplit(args.url)
    if args.host or args.port:
        creds = f"{url.username}:{url.password}@" if url.username else ""
        netloc = f"{creds}{args.host or url.hostname}:{args.port or url.port or 5672}"
        url = url._replace(netloc=netloc)
    address = args.address or f"/amq/queue/{args.queue}"
    bench = Bench(urlunsplit(url), address, args.n, args.prefetch, args.size)
    Container(bench).run()
    if bench.error or bench.push is None or bench.consume is None:
        sys.exit(f"proton-reactor: {bench.error or 'stopped before finishing'}")
    n = args.n
    push_wall, push_cpu = bench.push
    consume_wall, consume_cpu = bench.consume
    result = {
        "client": "proton-reactor",
        "n": n,
        "push_per_s": round(n / push_wall, 1),
        "consume_per_s": round(n / consume_wall, 1),
        "push_cpu_us_per_job": round(push_cpu / n * 1e6, 2),
        "consume_cpu_us_per_job": round(consume_cpu / n * 1e6, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
