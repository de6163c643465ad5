"""The embedded AMQP 1.0 broker (:class:`amqp1q.testing.Broker`) run by the command line.

- ``amqp1q broker`` serves it from the shell, for tests and demos, until Ctrl-C. ``--servicebus``
  turns on the Service Bus emulation and prints the connection string its clients
  (azure-servicebus, @azure/service-bus, amqp1q's Service Bus adapter) connect with; ``--queue``
  declares queues (Service Bus entities), ``--session-queue`` queues that require sessions.
  Without ``--servicebus`` a Service Bus client is told
  at once to start the broker with it.
- :func:`broker_process` runs it in a child process for ``amqp1q bench``: a benchmark that counts
  its own CPU time must not share its process with the broker. The child serves until its stdin
  closes, which happens however the parent ends (even by SIGKILL), so no broker is left behind.

Both announce the broker with the same line, ``amqp1q broker listening on amqp://HOST:PORT``,
which is how the parent learns the child's port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from typing import Any

from .._redact import redact

__all__ = ["BrokerDidNotStart", "add_broker_parser", "broker_process", "run_broker", "serve_child"]

#: The line that says a broker is up (the child's first line of output; the parent reads it).
LISTENING = "amqp1q broker listening on {url}"
_LISTENING = re.compile(r"listening on (amqp://\S+)")


def add_broker_parser(commands: Any) -> None:
    """``amqp1q broker``'s arguments (``commands``: the subparsers of the ``amqp1q`` parser)."""
    broker = commands.add_parser("broker", help="run the embedded AMQP 1.0 broker (for testing)")
    broker.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    broker.add_argument("--port", type=int, default=5673, help="port (5673; 0 picks a free one)")
    broker.add_argument(
        "--strict", action="store_true", help="only --queue queues exist; others: amqp:not-found"
    )
    broker.add_argument(
        "--queue", action="append", default=[], help="declare a queue (a Service Bus entity)"
    )
    broker.add_argument(
        "--session-queue",
        action="append",
        default=[],
        metavar="Q",
        help="declare a queue that requires sessions (Service Bus sessions; with --servicebus)",
    )
    broker.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="TOPIC[:SUB,SUB]",
        help="declare a topic and its subscriptions (TOPIC/Subscriptions/SUB; repeatable)",
    )
    broker.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="NAME:PASSWORD",
        help="check SASL PLAIN logins; with --servicebus, a SAS key name and key whose "
        "tokens are checked (default: any login and any token is taken)",
    )
    broker.add_argument(
        "--max-message-size",
        type=int,
        default=0,
        help="bytes (0: no limit; 256 KB with --servicebus, as Service Bus Standard)",
    )
    broker.add_argument(
        "--servicebus",
        action="store_true",
        help="emulate Azure Service Bus for its SDKs and amqp1q's Service Bus adapter, and print "
        "the connection string to use",
    )
    broker.set_defaults(run=run_broker)


async def run_broker(args: argparse.Namespace) -> int:
    """Serve until interrupted; exit code 2 for a malformed ``--user``."""
    from ..testing import Broker

    users = {}
    for item in args.user:
        name, sep, password = item.partition(":")
        if not sep or not name:
            print(f"error: --user wants NAME:PASSWORD, got {redact(item)!r}", file=sys.stderr)
            return 2
        users[name] = password
    topics: dict[str, list[str]] = {}
    for item in args.topic:
        name, _, subscriptions = item.partition(":")
        if not name:
            print(f"error: --topic wants TOPIC[:SUB,SUB], got {item!r}", file=sys.stderr)
            return 2
        topics.setdefault(name, []).extend(s for s in subscriptions.split(",") if s)
    broker = Broker(
        host=args.host,
        port=args.port,
        users=users,
        strict=args.strict,
        queues=args.queue,
        topics=topics,
        max_message_size=args.max_message_size,
        servicebus=args.servicebus,
    )
    for name in args.session_queue:
        broker.declare(name, requires_session=True)
    await broker.start()
    print(LISTENING.format(url=broker.url), "(Ctrl-C stops it)", flush=True)
    if args.servicebus:
        subscriptions = [f"{t}/Subscriptions/{s}" for t, subs in topics.items() for s in subs]
        sessions = [f"{name} (sessions)" for name in args.session_queue]
        _print_servicebus(broker, [*args.queue, *sessions, *topics, *subscriptions])
    try:
        await asyncio.Event().wait()
    finally:
        await broker.stop()
    return 0


def _print_servicebus(broker: Any, entities: Sequence[str]) -> None:
    """How to reach the Service Bus emulation: the connection string (a key given with
    ``--user`` is masked: the caller knows it) and the declared entities."""
    key_name = next(iter(broker.users), None)
    if key_name is None:
        text = broker.servicebus_connection_string()  # its key is a placeholder: any is taken
    else:
        text = redact(broker.servicebus_connection_string(key_name=key_name))
        text += f"  (*** is the key given for {key_name})"
    print(f"emulating Azure Service Bus; connection string: {text}", flush=True)
    if entities:
        print(f"entities: {', '.join(entities)}", flush=True)


# -- amqp1q bench's broker, in a child process ---------------------------------------------------


class BrokerDidNotStart(Exception):
    """The child process did not report a listening broker in time."""


@contextlib.asynccontextmanager
async def broker_process(start_timeout: float = 30.0) -> AsyncIterator[str]:
    """Run the embedded broker in a child process; yield its ``amqp://HOST:PORT``.

    The child serves until its stdin closes, which happens however this process ends (even by
    SIGKILL), so no broker is left behind.
    """
    with tempfile.TemporaryFile() as errors:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            f"from {__name__} import serve_child; serve_child()",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=errors,
        )
        try:
            assert process.stdout is not None
            try:
                line = await asyncio.wait_for(process.stdout.readline(), start_timeout)
            except asyncio.TimeoutError:
                line = b""
            found = _LISTENING.search(line.decode("utf-8", "replace"))
            if found is None:
                errors.seek(0)
                detail = errors.read().decode("utf-8", "replace").strip().splitlines()[-5:]
                raise BrokerDidNotStart(
                    "the embedded broker did not start: " + (" ".join(detail) or "no reason given")
                )
            yield found.group(1)
        finally:
            if process.stdin is not None:
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()


def serve_child() -> None:
    """The child of :func:`broker_process`: print the broker's URL, serve until stdin closes."""
    # Ctrl-C reaches the whole process group: let the parent stop first and close our stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_serve_child())


async def _serve_child() -> None:
    from ..testing import Broker

    stdin = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    async with Broker() as broker:
        print(LISTENING.format(url=broker.url), flush=True)
        await stdin.read()  # EOF: the parent is done, or gone
