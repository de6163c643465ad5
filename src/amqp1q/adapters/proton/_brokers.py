"""Broker profiles: who is on the other end, and how to address queues and shape outcomes there.

A profile is a small table: the address form of a queue and an exchange, which settlement
outcomes the broker is known to honour, where the dead-letter queue is read from, and how a
delay reaches it. It is picked from the Open frame's ``product``/``version`` properties, or
forced with ``JobQueue.from_url(..., broker="rabbitmq4")``.

``honours`` lists the outcomes besides ``accepted`` that the broker is known to act on as AMQP
1.0 says (``released``: back in the queue, no attempt counted; ``modified``: back, one attempt
counted; ``rejected``: dead-lettered where amqp1q can read it). Every other outcome is emulated
with what every AMQP 1.0 broker has -- a push and an ``accepted``: the job is re-published
(a release byte for byte; a retry with ``x-amqp1q-attempt`` + 1; a dead-letter to ``Q.dlq``
with the reason), then the original accepted. Publishing first means a crash between the two
gives a duplicate, never a loss.

What is known of each, and tested how (see docs/brokers/):

- RabbitMQ 3.x (``rabbitmq_amqp1_0`` plugin; tested live here): ``/amq/queue/Q``,
  ``/exchange/X/K``. Honours ``released``; ``modified`` ends the session ("Unrecognised
  state") and ``rejected`` drops the message unless a dead-letter exchange is set up.
  No delay of its own: delays go through the ``amqp1q.delay.N`` exchanges that
  ``amqp1q setup-rabbitmq`` declares (per-message TTL, then dead-lettered back to the queue).
- RabbitMQ 4.x: ``/queues/Q``, ``/exchanges/X/K``; ``modified`` counts deliveries on quorum
  queues only, so retries are re-published as on 3.x.
- ActiveMQ Artemis: plain names; delay by the ``x-opt-delivery-time`` annotation.
- Qpid (Broker-J, C++ broker, Dispatch): plain names; vouched for nothing, no delay.
- Azure Service Bus: plain entity names, ``x-opt-scheduled-enqueue-time``, dead-letter by a
  ``rejected`` outcome with the ``com.microsoft:dead-letter`` condition; DLQ at
  ``Q/$deadletterqueue``.
- amqp1q's embedded broker: as Service Bus, and it reads all three delay annotations.
- Anything else (``generic``; Qpid Proton's example brokers announce no product and land
  here, tested live): plain names, nothing vouched for, no drain, no delay.

Where the broker has no delayed delivery (:attr:`DelayStyle.HELD`), the consumer holds it: a
delayed push goes out at once carrying ``x-amqp1q-not-before`` (ms since the epoch) and a
consumer keeps it, unsettled, until then; a delayed retry keeps the unsettled delivery itself
until its time and then retries it (docs/brokers/qpid.md says what that costs).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from typing import Any, Final

import attrs

from ..._errors import UnsupportedFeature
from ..._properties import NOT_BEFORE

__all__ = [
    "DEAD_LETTER_CONDITION",
    "MODIFIED",
    "NOT_BEFORE_PROPERTY",
    "REJECTED",
    "RELEASED",
    "BrokerProfile",
    "DeadLetterStyle",
    "DelayPlan",
    "DelayStyle",
    "detect",
    "profile_named",
]

DEAD_LETTER_CONDITION: Final = "com.microsoft:dead-letter"
#: Application property of a delayed job on a broker without delayed delivery: the time (ms
#: since the epoch, UTC) before which a consumer holds it instead of handing it out.
NOT_BEFORE_PROPERTY: Final = NOT_BEFORE
#: The outcomes a profile may vouch for (``accepted`` every broker honours).
RELEASED: Final = "released"
MODIFIED: Final = "modified"
REJECTED: Final = "rejected"
_ALL_OUTCOMES: Final = frozenset({RELEASED, MODIFIED, REJECTED})
RABBITMQ_DELAY_EXCHANGE_PREFIX: Final = "amqp1q.delay."
#: A Service Bus subscription's entity path (its dead-letter queue: + ``/$deadletterqueue``).
SERVICEBUS_SUBSCRIPTION_FORM: Final = "{topic}/Subscriptions/{subscription}"
#: On RabbitMQ, the queue ``amqp1q setup-rabbitmq --topic T --subscription S`` binds to the
#: exchange ``T`` (docs/topics.md).
SUBSCRIPTION_QUEUE_FORM: Final = "{topic}.{subscription}"
#: Delay buckets for RabbitMQ 3.x: bucket k holds TTLs in [2**k, 2**(k+1)) ms.
RABBITMQ_DELAY_MIN_BUCKET: Final = 7  # < 256 ms share bucket 7
RABBITMQ_DELAY_MAX_BUCKET: Final = 31  # ~24.8 days; longer delays are refused


class DelayStyle(enum.Enum):
    #: The broker has none: the consumer holds delayed jobs (see the module docstring).
    HELD = "held"
    SCHEDULED_ENQUEUE_TIME = "x-opt-scheduled-enqueue-time"  # absolute, timestamp
    DELIVERY_TIME = "x-opt-delivery-time"  # absolute, ms since the epoch (long)
    RABBITMQ_TTL_EXCHANGES = "rabbitmq-ttl-exchanges"


class DeadLetterStyle(enum.Enum):
    REJECT = "reject"  # the broker dead-letters a rejected delivery itself
    REJECT_WITH_INFO = "reject-with-info"  # ... and reads the reason from the condition
    REPUBLISH = "republish"  # we publish to the DLQ with the reason, then accept


@attrs.frozen
class DelayPlan:
    """How one delayed message travels: to ``address`` with these annotations, application
    properties and TTL."""

    address: str
    annotations: Mapping[str, Any] = attrs.field(factory=dict)
    ttl_ms: int | None = None
    properties: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class BrokerProfile:
    name: str
    product: str = "an AMQP 1.0 broker"
    queue_prefix: str = ""
    exchange_form: str | None = None  # e.g. "/exchange/{exchange}/{key}"
    #: The outcomes (besides ``accepted``) the broker is known to honour; the others are
    #: emulated by re-publishing, then accepting. Empty: the broker is vouched for in nothing.
    honours: frozenset[str] = frozenset()
    #: A rejection carries the reason in the ``com.microsoft:dead-letter`` condition's info.
    reject_with_info: bool = False
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
    delay: DelayStyle = DelayStyle.HELD
    #: Where a dead-lettered job is read from: the queue's name plus this.
    dead_letter_suffix: str | None = ".dlq"
    #: The queue a topic's subscription is (``{topic}``, ``{subscription}``); None: the broker
    #: has no subscriptions amqp1q knows how to name (docs/topics.md).
    subscription_form: str | None = None
    #: False where asking for a dynamic node (a temporary reply queue) is not safe: Qpid
    #: Proton's C example broker drops the connection, and an unknown broker may too. Replies
    #: to ``queue.call()`` then need the client's ``reply_queue=``. (RabbitMQ 3.x refuses the
    #: attach cleanly, with amqp:not-implemented: asking is safe there.)
    dynamic_nodes: bool = True

    @property
    def supports_modified(self) -> bool:
        return MODIFIED in self.honours

    @property
    def honours_released(self) -> bool:
        return RELEASED in self.honours

    @property
    def dead_letter(self) -> DeadLetterStyle:
        if REJECTED not in self.honours:
            return DeadLetterStyle.REPUBLISH
        return DeadLetterStyle.REJECT_WITH_INFO if self.reject_with_info else DeadLetterStyle.REJECT

    def queue_address(self, queue: str) -> str:
        return f"{self.queue_prefix}{queue}"

    def exchange_address(self, exchange: str, routing_key: str | None) -> str:
        if self.exchange_form is None:
            raise UnsupportedFeature(
                f"{self.product} has no exchanges; remove exchange= and routing_key="
            )
        return self.exchange_form.format(exchange=exchange, key=routing_key or "").rstrip("/")

    def topic_address(self, topic: str, routing_key: str | None) -> str:
        """Where a push to ``topic`` goes: an exchange where the broker has them (RabbitMQ;
        ``routing_key`` applies), else the topic's own address."""
        if self.exchange_form is not None:
            return self.exchange_address(topic, routing_key)
        if routing_key is not None:
            raise UnsupportedFeature(f"{self.product} has no routing keys; remove routing_key=")
        return self.queue_address(topic)

    def subscription_queue(self, topic: str, subscription: str) -> str:
        """The logical queue a topic's subscription is read from (UnsupportedFeature where
        the broker has none amqp1q can name)."""
        if self.subscription_form is None:
            raise UnsupportedFeature(
                f"{self.product} has no topic subscriptions amqp1q can name; consume the "
                "queue bound to the topic with client.queue(NAME)"
            )
        return self.subscription_form.format(topic=topic, subscription=subscription)

    def dead_letter_queue(self, queue: str) -> str | None:
        """The logical name of ``queue``'s dead-letter queue, if this profile knows it."""
        return None if self.dead_letter_suffix is None else f"{queue}{self.dead_letter_suffix}"

    def plan_delay(self, queue: str, address: str, delay: float, now_ms: int) -> DelayPlan:
        """How to deliver to ``address`` after ``delay`` seconds, or raise UnsupportedFeature."""
        delay_ms = max(0, math.ceil(delay * 1000))
        if self.delay is DelayStyle.HELD:
            return DelayPlan(address, properties={NOT_BEFORE_PROPERTY: now_ms + delay_ms})
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
        raise AssertionError(f"unknown delay style {self.delay}")  # pragma: no cover


_PROFILES: Final = {
    "rabbitmq3": BrokerProfile(
        "rabbitmq3",
        "RabbitMQ 3.x",
        queue_prefix="/amq/queue/",
        exchange_form="/exchange/{exchange}/{key}",
        honours=frozenset({RELEASED}),
        supports_drain=False,
        probe_queues=True,
        fresh_credit=True,
        delay=DelayStyle.RABBITMQ_TTL_EXCHANGES,
        subscription_form=SUBSCRIPTION_QUEUE_FORM,
    ),
    "rabbitmq4": BrokerProfile(
        "rabbitmq4",
        "RabbitMQ 4.x",
        queue_prefix="/queues/",
        exchange_form="/exchanges/{exchange}/{key}",
        # modified(delivery-failed) counts only on quorum queues: re-publish, as on 3.x.
        honours=frozenset({RELEASED}),
        delay=DelayStyle.RABBITMQ_TTL_EXCHANGES,
        subscription_form=SUBSCRIPTION_QUEUE_FORM,
    ),
    "artemis": BrokerProfile(
        "artemis",
        "ActiveMQ Artemis",
        honours=frozenset({RELEASED, MODIFIED}),
        delay=DelayStyle.DELIVERY_TIME,
        # A multicast address's queue, by its fully qualified name.
        subscription_form="{topic}::{subscription}",
    ),
    # Broker-J, the C++ broker and Dispatch differ in what they do with a rejected (or even a
    # released) delivery depending on configuration: nothing is taken on trust.
    "qpid": BrokerProfile("qpid", "Apache Qpid"),
    "servicebus": BrokerProfile(
        "servicebus",
        "Azure Service Bus",
        honours=_ALL_OUTCOMES,
        reject_with_info=True,
        delay=DelayStyle.SCHEDULED_ENQUEUE_TIME,
        dead_letter_suffix="/$deadletterqueue",
        subscription_form=SERVICEBUS_SUBSCRIPTION_FORM,
    ),
    "amqp1q": BrokerProfile(
        "amqp1q",
        "the amqp1q embedded broker",
        honours=_ALL_OUTCOMES,
        reject_with_info=True,
        delay=DelayStyle.DELIVERY_TIME,
        dead_letter_suffix="/$deadletterqueue",
        subscription_form=SERVICEBUS_SUBSCRIPTION_FORM,
    ),
    # Unknown: Qpid Proton's example brokers (no product in their Open frame) drop whatever
    # is not accepted and answer no drain; the C one even sends every delivery pre-settled.
    "generic": BrokerProfile("generic", supports_drain=False, dynamic_nodes=False),
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
