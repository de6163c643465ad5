"""``amqp1q broker``: the embedded AMQP 1.0 broker from the shell, for tests and demos.

``--servicebus`` turns on the Service Bus emulation and prints the connection string its
clients (azure-servicebus, @azure/service-bus, amqp1q's Service Bus adapter) connect with;
``--queue`` declares queues (Service Bus entities). Without ``--servicebus`` a Service Bus client
is told at once to start the broker with it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from ._redact import redact

__all__ = ["add_broker_parser", "run_broker"]


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
    from .testing import Broker

    users = {}
    for item in args.user:
        name, sep, password = item.partition(":")
        if not sep or not name:
            print(f"error: --user wants NAME:PASSWORD, got {redact(item)!r}", file=sys.stderr)
            return 2
        users[name] = password
    broker = Broker(
        host=args.host,
        port=args.port,
        users=users,
        strict=args.strict,
        queues=args.queue,
        max_message_size=args.max_message_size,
        servicebus=args.servicebus,
    )
    await broker.start()
    print(f"amqp1q broker listening on {broker.url} (Ctrl-C stops it)", flush=True)
    if args.servicebus:
        _print_servicebus(broker, args.queue)
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
