"""Virtual hosts: ``vhost=`` and ``?vhost=``, the Open frame's hostname, and the hints a
missing queue's error gives on RabbitMQ (no network)."""

from __future__ import annotations

import pytest

from amqp1q import InvalidSetting, InvalidURL, JobQueue, UnsupportedFeature
from amqp1q._factory import AdapterOptions
from amqp1q._urls import AmqpEndpoint, parse_url
from amqp1q.adapters.proton._brokers import profile_named
from amqp1q.adapters.proton._vhosts import open_hostname
from amqp1q.adapters.proton.adapter import ProtonAdapter

PASSWORD = "s3cr3t-pw"


def test_the_url_names_the_vhost_in_its_query() -> None:
    ep = parse_url(f"amqp://app:{PASSWORD}@rabbit:5672/emails?vhost=prod")
    assert isinstance(ep, AmqpEndpoint)
    assert (ep.queue, ep.vhost) == ("emails", "prod")
    assert ep.display == "amqp://app:***@rabbit:5672/emails?vhost=prod"
    slash = parse_url("amqp://rabbit/emails?vhost=%2F")
    assert isinstance(slash, AmqpEndpoint)
    assert slash.vhost == "/"
    assert slash.display == "amqp://rabbit:5672/emails?vhost=%2F"
    assert parse_url("amqp://rabbit/emails").vhost is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("?x=1", "query parameters amqp1q does not read (x)"),
        ("?vhost=a&prefetch=5", "(prefetch)"),
        ("?vhost=a&vhost=b", "gives vhost more than once"),
        ("?vhost=", "empty vhost"),
        ("?vhost", "expected ?vhost=NAME"),
    ],
)
def test_bad_queries_are_refused_without_the_password(query: str, problem: str) -> None:
    with pytest.raises(InvalidURL) as info:
        parse_url(f"amqp://app:{PASSWORD}@rabbit/q{query}")
    assert problem in str(info.value)
    assert PASSWORD not in f"{info.value} {info.value!r}"


def test_from_url_takes_vhost_as_a_keyword_or_from_the_url() -> None:
    by_keyword = JobQueue.from_url("amqp://rabbit/q", vhost="prod")
    by_url = JobQueue.from_url("amqp://rabbit/q?vhost=prod")
    both = JobQueue.from_url("amqp://rabbit/q?vhost=prod", vhost="prod")
    for queue in (by_keyword, by_url, both):
        assert queue.adapter._options.vhost == "prod"  # type: ignore[attr-defined]
    with pytest.raises(InvalidSetting, match="disagrees with the URL's"):
        JobQueue.from_url("amqp://rabbit/q?vhost=prod", vhost="test")
    with pytest.raises(InvalidSetting, match="vhost must be a non-empty str"):
        JobQueue.from_url("amqp://rabbit/q", vhost="")


def test_backends_without_virtual_hosts_refuse_one() -> None:
    with pytest.raises(UnsupportedFeature, match="vhost"):
        JobQueue.from_url("memory://q", vhost="prod")
    with pytest.raises(UnsupportedFeature, match="no virtual hosts"):
        JobQueue.from_url(
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;"
            "SharedAccessKey=c2VjcmV0;EntityPath=q",
            vhost="prod",
        )


@pytest.mark.parametrize(
    ("vhost", "broker", "hostname"),
    [
        (None, None, "rabbit.example"),  # no vhost: the URL's host, as before
        ("prod", None, "vhost:prod"),  # RabbitMQ 3.x plugin and 4.x read this form
        ("prod", "rabbitmq3", "vhost:prod"),
        ("prod", "RabbitMQ4", "vhost:prod"),
        ("/", None, "vhost:/"),
        ("vhost:prod", None, "vhost:prod"),  # already in RabbitMQ's form
        ("prod", "qpid", "prod"),  # the spec's meaning: the virtual host's own name
        ("prod", "artemis", "prod"),
    ],
)
def test_the_open_frame_hostname(vhost: str | None, broker: str | None, hostname: str) -> None:
    assert open_hostname("rabbit.example", vhost, broker) == hostname


def _adapter(host: str, *, vhost: str | None = None, queue: str = "emails") -> ProtonAdapter:
    endpoint = AmqpEndpoint(scheme="amqp", host=host, port=5672, queue=queue)
    adapter = ProtonAdapter(endpoint, AdapterOptions(vhost=vhost, broker="rabbitmq3"), queue)
    return adapter


def test_a_missing_queue_on_rabbitmq_names_the_setup_command() -> None:
    local = _adapter("127.0.0.1")
    assert local.not_found_hint("/amq/queue/emails") == (
        " (declare it with: amqp1q setup-rabbitmq --queue emails)"
    )
    assert local.not_found_hint("/amq/queue/emails.dlq") == (
        " (declare it with: amqp1q setup-rabbitmq --queue emails)"
    )
    assert "it declares the delay exchanges" in local.not_found_hint(
        "/exchange/amqp1q.delay.9/emails"
    )
    assert local.not_found_hint("/exchange/orders/eu") == ""  # not ours to declare
    remote = _adapter("rabbit.example", vhost="prod tenant")
    assert remote.not_found_hint("/amq/queue/emails") == (
        " (declare it with: amqp1q setup-rabbitmq --queue emails --vhost 'prod tenant' "
        "--management-url http://rabbit.example:15672)"
    )
    assert _adapter("127.0.0.1", vhost="/").not_found_hint("/amq/queue/emails") == (
        " (declare it with: amqp1q setup-rabbitmq --queue emails)"
    )


def test_other_brokers_get_no_rabbitmq_hint() -> None:
    endpoint = AmqpEndpoint(scheme="amqp", host="127.0.0.1", port=5672, queue="q")
    adapter = ProtonAdapter(endpoint, AdapterOptions(broker="artemis"), "q")
    assert adapter.profile == profile_named("artemis")
    assert adapter.not_found_hint("q") == ""
