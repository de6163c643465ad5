"""``amqp1q setup-rabbitmq``: declare job queues, their ``.dlq`` queues and the delay exchanges,
and topics (a ``topic`` exchange, a bound job queue per subscription).

RabbitMQ 3.x's AMQP 1.0 plugin declares nothing, so this goes through the management API
(:mod:`amqp1q.adapters.proton.rabbitmq_setup`).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["add_setup_parser"]


def add_setup_parser(commands: Any) -> None:
    """``amqp1q setup-rabbitmq``'s arguments."""
    setup = commands.add_parser(
        "setup-rabbitmq",
        help="declare job queues, their .dlq queues and the delay exchanges on RabbitMQ 3.x",
    )
    setup.add_argument("--queue", action="append", default=[], help="a job queue (repeatable)")
    setup.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="TOPIC:SUB[,SUB]",
        help="a topic exchange and, per subscription, the queue TOPIC.SUB bound to it (repeatable)",
    )
    setup.add_argument(
        "--reply-queue",
        action="append",
        default=[],
        metavar="NAME",
        help="a client's reply queue, for queue.call() with reply_queue=NAME (repeatable)",
    )
    setup.add_argument(
        "--management-url",
        default=os.environ.get(
            "AMQP1Q_RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672"
        ),
        help="RabbitMQ's management API (default: $AMQP1Q_RABBITMQ_MANAGEMENT_URL, else local)",
    )
    setup.add_argument(
        "--vhost", default="/", help="the virtual host to declare them in (/, the default)"
    )
    setup.add_argument("--max-priority", type=int, default=10, help="x-max-priority (10; 0: none)")
    setup.add_argument(
        "--single-active-consumer",
        action="store_true",
        help="declare the --queue queues with x-single-active-consumer: one consumer at a time "
        "(for consume(groups=N), docs/ordering.md)",
    )
    setup.set_defaults(run=_setup_rabbitmq)


async def _setup_rabbitmq(args: argparse.Namespace) -> int:
    from ..adapters.proton.rabbitmq_setup import RabbitMQManagement

    topics: list[tuple[str, list[str]]] = []
    for item in args.topic:
        name, _, subscriptions = item.partition(":")
        if not name:
            print(f"error: --topic wants TOPIC:SUB[,SUB], got {item!r}", file=sys.stderr)
            return 2
        topics.append((name, [s for s in subscriptions.split(",") if s]))
    if not args.queue and not topics and not args.reply_queue:
        print("error: give --queue, --topic or --reply-queue (each repeatable)", file=sys.stderr)
        return 2
    management = RabbitMQManagement(args.management_url, vhost=args.vhost)
    management.setup_delays()
    for name, subscriptions in topics:
        management.setup_topic(name, subscriptions, max_priority=args.max_priority)
        queues = ", ".join(f"{name}.{s}" for s in subscriptions) or "no queues"
        print(f"declared the topic exchange {name}, bound to {queues}")
    for queue in args.queue:
        management.setup_job_queue(
            queue,
            max_priority=args.max_priority,
            single_active_consumer=args.single_active_consumer,
        )
        single = ", x-single-active-consumer" if args.single_active_consumer else ""
        print(f"declared {queue} (x-max-priority {args.max_priority}{single}) and {queue}.dlq")
    for queue in args.reply_queue:
        management.setup_reply_queue(queue)
        print(f"declared the reply queue {queue}")
    print(f"declared the delay exchanges on {management.display}")
    return 0
