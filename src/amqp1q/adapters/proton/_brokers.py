"""Broker profiles: who is on the other end, and how to address queues and shape outcomes there.

A profile is a small table: the address form of a queue and an exchange, where the dead-letter
queue is read from, whether the broker takes the ``modified`` outcome, and how a delay reaches
it. It is picked from the Open frame's ``product``/``version`` properties, or forced with
``JobQueue.from_url(..., broker="rabbitmq4")``.

What is known of each, and tested how (see docs/brokers/):

- RabbitMQ 3.x (``rabbitmq_amqp1_0`` plugin; tested live here): ``/amq/queue/Q``,
  ``/exchange/X/K``. ``modified`` ends the session ("Unrecognised state"), so a retry is
  re-published with the attempt counted in ``x-amqp1q-attempt`` and the original accepted.
  No delay of its own: delays go through the ``amqp1q.delay.N`` exchanges that
  ``amqp1q setup-rabbitmq`` declares (per-message TTL, then dead-lettered back to the queue).
  Dead-lettering re-publishes to ``Q.dlq`` with the reason, then accepts.
- RabbitMQ 4.x: ``/queues/Q``, ``/exchanges/X/K``; ``modified`` counts deliveries on quorum
  queues only, so retries are re-published as on 3.x.
- ActiveMQ Artemis: plain names; delay by the ``x-opt-delivery-time`` annotation.
- Qpid (Broker-J, C++ broker, Dispatch): plain names; no delay.
- Azure Service Bus: plain entity names, ``x-opt-scheduled-enqueue-time``, dead-letter by a
  ``rejected`` outcome with the ``com.microsoft:dead-letter`` condition; DLQ at
  ``Q/$deadletterqueue``.
- amqp1q's embedded broker: as Service Bus, and it reads all three delay annotations.
- Anything else: plain names, standard outcomes, no delay.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from typing import Any, Final

import attrs

from ..._errors import UnsupportedFeature

__all__ = [
    "DEAD_LETTER_CONDITION",
    "BrokerProfile",
    "DeadLetterStyle",
    "DelayPlan",
    "DelayStyle",
    "detect",
    "profile_named",
]

DEAD_LETTER_CONDITION: Final = "com.microsoft:dead-letter"
RABBITMQ_DELAY_EXCHANGE_PREFIX: Final = "amqp1q.delay."
#: Delay buckets for RabbitMQ 3.x: bucket k holds TTLs in [2**k, 2**(k+1)) ms.
RABBITMQ_DELAY_MIN_BUCKET: Final = 7  # < 256 ms share bucket 7
RABBITMQ_DELAY_MAX_BUCKET: Final = 31  # ~24.8 days; longer delays are refused


class DelayStyle(enum.Enum):
    NONE = "none"
    SCHEDULED_ENQUEUE_TIME = "x-opt-scheduled-enqueue-time"  # absolute, timestamp
    DELIVERY_TIME = "x-opt-delivery-time"  # absolute, ms since the epoch (long)
    RABBITMQ_TTL_EXCHANGES = "rabbitmq-ttl-exchanges"


class DeadLetterStyle(enum.Enum):
    REJECT = "reject"  # the broker dead-letters a rejected delivery itself
    REJECT_WITH_INFO = "reject-with-info"  # ... and reads the reason from the condition
    REPUBLISH = "republish"  # we publish to the DLQ with the reason, then accept


@attrs.frozen
class DelayPlan:
    """How one delayed message travels: to ``address`` with these annotations and TTL."""

    address: str
    annotations: Mapping[str, Any] = attrs.field(factory=dict)
    ttl_ms: int | None = None


@attrs.frozen
class BrokerProfile:
    name: str
    product: str = "an AMQP 1.0 broker"
    queue_prefix: str = ""
    exchange_form: str | None = None  # e.g. "/exchange/{exchange}/{key}"
    supports_modified: bool = True
    #: False where a drain request breaks the broker (RabbitMQ 3.10 classic queues crash the
    #: link): pausing then holds what arrives and closing releases it, without a drain.
    supports_drain: bool = True
    #: False where ``delivery-count`` also counts releases (so it cannot be an attempt count).
    counts_attempts: bool = True
    #: True where a sender attached to a missing queue is accepted and its messages dropped
    #: (RabbitMQ 3.x routes them through the default exchange): probe with a receiver first.
    probe_queues: bool = False
    #: True where a flow frame's link-credit is taken as a fresh grant, deliveries still in
    #: flight not deducted (RabbitMQ 3.x): credit is then topped up only once used up.
    fresh_credit: bool = False
    delay: DelayStyle = DelayStyle.NONE
    dead_letter: DeadLetterStyle = DeadLetterStyle.REJECT
    dead_letter_suffix: str | None = None

    def queue_address(self, queue: str) -> str:
        return f"{self.queue_prefix}{queue}"

    def exchange_address(self, exchange: str, routing_key: str | None) -> str:
        if self.exchange_form is None:
            raise UnsupportedFeature(
                f"{self.product} has no exchanges; remove exchange= and routing_key="
            )
        return self.exchange_form.format(exchange=exchange, key=routing_key or "").rstrip("/")

    def dead_letter_queue(self, queue: str) -> str | None:
        """The logical name of ``queue``'s dead-letter queue, if this profile knows it."""
        return None if self.dead_letter_suffix is None else f"{queue}{self.dead_letter_suffix}"

    def plan_delay(self, queue: str, address: str, delay: float, now_ms: int) -> DelayPlan:
        """How to deliver to ``address`` after ``delay`` seconds, or raise UnsupportedFeature."""
        delay_ms = max(0, math.ceil(delay * 1000))
        if self.delay is DelayStyle.SCHEDULED_ENQUEUE_TIME:
            return DelayPlan(
                address, {DelayStyle.SCHEDULED_ENQUEUE_TIME.value: ("timestamp", now_ms + delay_ms)}
            )
        if self.delay is DelayStyle.DELIVERY_TIME:
            return DelayPlan(address, {DelayStyle.DELIVERY_TIME.value: ("long", now_ms + delay_ms)})
        if self.delay is DelayStyle.RABBITMQ_TTL_EXCHANGES:
            bucket = max(RABBITMQ_DELAY_MIN_BUCKET, max(delay_ms, 1).bit_length() - 1)
            if bucket > RABBITMQ_DELAY_MAX_BUCKET:
                raise UnsupportedFeature(
                    f"{self.product}: a delay of {delay:g} s is longer than the "
                    f"{2 ** (RABBITMQ_DELAY_MAX_BUCKET + 1) // 1000} s the delay exchanges hold",
                    queue=queue,
                )
            return DelayPlan(
                f"/exchange/{RABBITMQ_DELAY_EXCHANGE_PREFIX}{bucket}/{queue}",
                ttl_ms=max(delay_ms, 1),
            )
        raise UnsupportedFeature(
            f"{self.product} has no delayed delivery that amqp1q can use; "
            "push without delay= (or retry without a delay)",
            queue=queue,
        )


_PROFILES: Final = {
    "rabbitmq3": BrokerProfile(
        "rabbitmq3",
        "RabbitMQ 3.x",
        queue_prefix="/amq/queue/",
        exchange_form="/exchange/{exchange}/{key}",
        supports_modified=False,
        supports_drain=False,
        probe_queues=True,
        fresh_credit=True,
        delay=DelayStyle.RABBITMQ_TTL_EXCHANGES,
        dead_letter=DeadLetterStyle.REPUBLISH,
        dead_letter_suffix=".dlq",
    ),
    "rabbitmq4": BrokerProfile(
        "rabbitmq4",
        "RabbitMQ 4.x",
        queue_prefix="/queues/",
        exchange_form="/exchanges/{exchange}/{key}",
        # modified(delivery-failed) counts only on quorum queues: re-publish, as on 3.x.
        supports_modified=False,
        delay=DelayStyle.RABBITMQ_TTL_EXCHANGES,
        dead_letter=DeadLetterStyle.REPUBLISH,
        dead_letter_suffix=".dlq",
    ),
    "artemis": BrokerProfile(
        "artemis",
        "ActiveMQ Artemis",
        delay=DelayStyle.DELIVERY_TIME,
        dead_letter=DeadLetterStyle.REPUBLISH,
        dead_letter_suffix=".dlq",
    ),
    "qpid": BrokerProfile("qpid", "Apache Qpid"),
    "servicebus": BrokerProfile(
        "servicebus",
        "Azure Service Bus",
        delay=DelayStyle.SCHEDULED_ENQUEUE_TIME,
        dead_letter=DeadLetterStyle.REJECT_WITH_INFO,
        dead_letter_suffix="/$deadletterqueue",
    ),
    "amqp1q": BrokerProfile(
        "amqp1q",
        "the amqp1q embedded broker",
        delay=DelayStyle.DELIVERY_TIME,
        dead_letter=DeadLetterStyle.REJECT_WITH_INFO,
        dead_letter_suffix="/$deadletterqueue",
    ),
    "generic": BrokerProfile("generic"),
}


def profile_named(name: str) -> BrokerProfile:
    try:
        return _PROFILES[name.lower()]
    except KeyError:
        raise UnsupportedFeature(
            f"unknown broker profile {name!r}; choose one of {', '.join(sorted(_PROFILES))}"
        ) from None


_MAJOR = re.compile(r"(\d+)")


def detect(properties: Mapping[str, Any], host: str) -> BrokerProfile:
    """Pick a profile from the Open frame's properties (and, for Service Bus, the host name)."""
    product = str(properties.get("product", "")).lower()
    version = str(properties.get("version", ""))
    match = _MAJOR.match(version)
    major = int(match.group(1)) if match else 0
    if "rabbitmq" in product:
        base = _PROFILES["rabbitmq4" if major >= 4 else "rabbitmq3"]
    elif "artemis" in product:
        base = _PROFILES["artemis"]
    elif "qpid" in product:
        base = _PROFILES["qpid"]
    elif product == "amqp1q-broker":
        base = _PROFILES["amqp1q"]
    elif host.endswith(".servicebus.windows.net") or "microsoft" in product:
        base = _PROFILES["servicebus"]
    else:
        base = _PROFILES["generic"]
    if version and base.name not in ("generic", "amqp1q"):
        return attrs.evolve(base, product=f"{base.product.split(' ')[0]} {version}")
    return base
