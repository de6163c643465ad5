"""Broker profiles: detection from the Open frame, address forms, delays, dead-letter queues.

RabbitMQ 4, Artemis, Qpid and Service Bus cannot run here; their address mapping is tested here
and their behaviour through the embedded broker (which shares the Service Bus conventions)."""

from __future__ import annotations

import pytest

from amqp1q import UnsupportedFeature
from amqp1q.adapters.proton._brokers import (
    NOT_BEFORE_PROPERTY,
    RABBITMQ_DELAY_EXCHANGE_PREFIX,
    DeadLetterStyle,
    DelayStyle,
    detect,
    profile_named,
)


@pytest.mark.parametrize(
    ("properties", "host", "name"),
    [
        ({"product": "RabbitMQ", "version": "3.10.8"}, "rabbit", "rabbitmq3"),
        ({"product": "RabbitMQ", "version": "4.0.5"}, "rabbit", "rabbitmq4"),
        ({"product": "apache-activemq-artemis", "version": "2.31.0"}, "h", "artemis"),
        ({"product": "qpid-cpp", "version": "1.39.0"}, "h", "qpid"),
        ({"product": "amqp1q-broker", "version": "0.1.0"}, "127.0.0.1", "amqp1q"),
        ({}, "ns.servicebus.windows.net", "servicebus"),
        ({"product": "something else"}, "h", "generic"),
        ({}, "h", "generic"),
    ],
)
def test_detection(properties: dict[str, str], host: str, name: str) -> None:
    assert detect(properties, host).name == name


def test_detected_version_shows_in_the_product_name() -> None:
    assert detect({"product": "RabbitMQ", "version": "3.10.8"}, "h").product == "RabbitMQ 3.10.8"


@pytest.mark.parametrize(
    ("profile", "queue_address", "exchange_address"),
    [
        ("rabbitmq3", "/amq/queue/jobs", "/exchange/ex/key"),
        ("rabbitmq4", "/queues/jobs", "/exchanges/ex/key"),
    ],
)
def test_rabbitmq_address_forms(profile: str, queue_address: str, exchange_address: str) -> None:
    p = profile_named(profile)
    assert p.queue_address("jobs") == queue_address
    assert p.exchange_address("ex", "key") == exchange_address
    assert p.exchange_address("ex", None) == exchange_address.rsplit("/", 1)[0]
    assert p.dead_letter_queue("jobs") == "jobs.dlq"
    assert p.dead_letter is DeadLetterStyle.REPUBLISH


@pytest.mark.parametrize("profile", ["artemis", "qpid", "servicebus", "amqp1q", "generic"])
def test_plain_queue_names_and_no_exchanges(profile: str) -> None:
    p = profile_named(profile)
    assert p.queue_address("jobs") == "jobs"
    with pytest.raises(UnsupportedFeature, match="no exchanges"):
        p.exchange_address("ex", "key")


@pytest.mark.parametrize(
    ("profile", "dlq"),
    [
        ("servicebus", "jobs/$deadletterqueue"),
        ("amqp1q", "jobs/$deadletterqueue"),
        ("artemis", "jobs.dlq"),
        ("qpid", "jobs.dlq"),
        ("generic", "jobs.dlq"),
    ],
)
def test_dead_letter_queues(profile: str, dlq: str | None) -> None:
    assert profile_named(profile).dead_letter_queue("jobs") == dlq


def test_servicebus_dead_letters_by_rejecting_with_info() -> None:
    assert profile_named("servicebus").dead_letter is DeadLetterStyle.REJECT_WITH_INFO


def test_annotation_delays() -> None:
    now = 1_000_000
    sb = profile_named("servicebus").plan_delay("q", "q", 2.5, now)
    assert sb.address == "q"
    assert sb.annotations == {"x-opt-scheduled-enqueue-time": ("timestamp", now + 2500)}
    artemis = profile_named("artemis").plan_delay("q", "q", 0.001, now)
    assert artemis.annotations == {"x-opt-delivery-time": ("long", now + 1)}
    assert profile_named("amqp1q").delay is DelayStyle.DELIVERY_TIME


@pytest.mark.parametrize(
    ("delay", "bucket"), [(0.0, 7), (0.1, 7), (0.3, 8), (0.6, 9), (1.0, 9), (60.0, 15)]
)
def test_rabbitmq_delay_buckets(delay: float, bucket: int) -> None:
    plan = profile_named("rabbitmq3").plan_delay("jobs", "/amq/queue/jobs", delay, 0)
    assert plan.address == f"/exchange/{RABBITMQ_DELAY_EXCHANGE_PREFIX}{bucket}/jobs"
    assert plan.ttl_ms == max(1, round(delay * 1000))
    assert 2**bucket <= max(plan.ttl_ms, 2**7) < 2 ** (bucket + 1)


def test_rabbitmq_refuses_delays_past_the_last_bucket() -> None:
    with pytest.raises(UnsupportedFeature, match="longer than"):
        profile_named("rabbitmq3").plan_delay("jobs", "/amq/queue/jobs", 60 * 86400, 0)


@pytest.mark.parametrize("profile", ["qpid", "generic"])
def test_where_the_broker_has_no_delay_the_consumer_holds_the_job(profile: str) -> None:
    plan = profile_named(profile).plan_delay("q", "q", 1.5, 1_000_000)
    assert profile_named(profile).delay is DelayStyle.HELD
    assert (plan.address, plan.annotations, plan.ttl_ms) == ("q", {}, None)
    assert plan.properties == {NOT_BEFORE_PROPERTY: 1_001_500}


#: What each profile vouches for besides ``accepted``; everything else is re-published.
HONOURS = {
    "rabbitmq3": {"released"},
    "rabbitmq4": {"released"},
    "artemis": {"released", "modified"},
    "qpid": set(),
    "generic": set(),
    "servicebus": {"released", "modified", "rejected"},
    "amqp1q": {"released", "modified", "rejected"},
}


@pytest.mark.parametrize(("profile", "honours"), sorted(HONOURS.items()))
def test_each_profile_vouches_for_these_outcomes(profile: str, honours: set[str]) -> None:
    p = profile_named(profile)
    assert p.honours == honours
    assert p.supports_modified is ("modified" in honours)
    assert p.honours_released is ("released" in honours)
    if "rejected" in honours:
        assert p.dead_letter is not DeadLetterStyle.REPUBLISH
    else:
        assert p.dead_letter is DeadLetterStyle.REPUBLISH
        assert p.dead_letter_queue("jobs") == "jobs.dlq"


def test_qpid_proton_example_brokers_are_generic() -> None:
    # Their Open frames carry no properties (their container-ids are "broker" and argv[0]).
    profile = detect({}, "127.0.0.1")
    assert profile.name == "generic"
    assert not profile.supports_drain  # neither example broker answers a drain


def test_unknown_profile_names_the_choices() -> None:
    with pytest.raises(UnsupportedFeature, match="rabbitmq3"):
        profile_named("kafka")
