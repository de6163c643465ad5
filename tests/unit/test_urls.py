"""URL and connection-string parsing, and that no error or repr shows a secret."""

from __future__ import annotations

import pickle

import pytest

from amqp1q import InvalidSetting, InvalidURL, JobQueue, UnsupportedFeature
from amqp1q._redact import Secret, redact
from amqp1q._urls import AmqpEndpoint, MemoryEndpoint, ServiceBusEndpoint, parse_url

PASSWORD = "s3cr3t-P@ss/word"
SAS_KEY = "AbCdEf+gh/ij12345678901234567890123456789=="


def test_amqp_url() -> None:
    ep = parse_url("amqp://guest:guest@127.0.0.1:5672/jobs")
    assert isinstance(ep, AmqpEndpoint)
    assert (ep.scheme, ep.host, ep.port, ep.username, ep.queue) == (
        "amqp",
        "127.0.0.1",
        5672,
        "guest",
        "jobs",
    )
    assert ep.password == Secret("guest")
    assert not ep.tls


def test_amqps_default_port_and_percent_decoding() -> None:
    ep = parse_url("amqps://RootManageSharedAccessKey:a%2Bb%2Fc%3D@ns.example.com/my%20queue")
    assert isinstance(ep, AmqpEndpoint)
    assert ep.port == 5671
    assert ep.tls
    assert ep.password is not None
    assert ep.password.reveal() == "a+b/c="
    assert ep.queue == "my queue"


def test_amqp_path_is_kept_for_address_forms() -> None:
    ep = parse_url("amqp://h/amq/queue/jobs")
    assert isinstance(ep, AmqpEndpoint)
    assert ep.queue == "amq/queue/jobs"


def test_ipv6_host() -> None:
    ep = parse_url("amqp://[::1]:5673/q")
    assert isinstance(ep, AmqpEndpoint)
    assert (ep.host, ep.port) == ("::1", 5673)
    assert ep.display == "amqp://[::1]:5673/q"


def test_display_masks_the_password() -> None:
    ep = parse_url(f"amqp://user:{PASSWORD.replace('@', '%40').replace('/', '%2F')}@h/q")
    assert isinstance(ep, AmqpEndpoint)
    assert ep.display == "amqp://user:***@h:5672/q"
    assert PASSWORD not in repr(ep)
    assert PASSWORD not in str(ep)


def test_memory_urls() -> None:
    assert parse_url("memory://jobs") == MemoryEndpoint(queue="jobs")
    assert parse_url("memory://tests/jobs") == MemoryEndpoint(namespace="tests", queue="jobs")
    assert parse_url("memory:///jobs") == MemoryEndpoint(queue="jobs")
    assert parse_url("memory://") == MemoryEndpoint()


def test_service_bus_connection_string() -> None:
    ep = parse_url(
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
        f"SharedAccessKey={SAS_KEY};EntityPath=jobs"
    )
    assert isinstance(ep, ServiceBusEndpoint)
    assert (ep.host, ep.port, ep.key_name, ep.entity_path, ep.emulator) == (
        "ns.servicebus.windows.net",
        None,
        "RootManageSharedAccessKey",
        "jobs",
        False,
    )
    assert ep.key is not None
    assert ep.key.reveal() == SAS_KEY
    assert SAS_KEY not in repr(ep)
    assert SAS_KEY not in ep.display


def test_service_bus_emulator_and_case_insensitive_keys() -> None:
    ep = parse_url(
        "endpoint=sb://127.0.0.1:5673;sharedaccesskeyname=k;sharedaccesskey=v;"
        "UseDevelopmentEmulator=true;"
    )
    assert isinstance(ep, ServiceBusEndpoint)
    assert (ep.host, ep.port, ep.emulator, ep.entity_path) == ("127.0.0.1", 5673, True, None)


def test_service_bus_signature() -> None:
    ep = parse_url("Endpoint=sb://ns/;SharedAccessSignature=SharedAccessSignature sr=x&sig=abc")
    assert isinstance(ep, ServiceBusEndpoint)
    assert ep.signature is not None
    assert "sig=abc" in ep.signature.reveal()
    assert "sig=abc" not in ep.display


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"amqp://user:{PASSWORD}@host:notaport/q", "percent-encode"),
        ("amqp://user:s3cr3t@host:notaport/q", "malformed URL"),
        ("amqp://user:s3cr3t@host:99999/q", "malformed URL"),
        ("amqp://user:s3cr3t@/q", "names no host"),
        (f"amqp://user:{PASSWORD}@host/q?x=1", "query parameters"),
        (f"amqp://user:{PASSWORD}@host/q#frag", "fragment"),
        (f"ftp://user:{PASSWORD}@host/q", "unknown URL scheme 'ftp'"),
        (f"user:{PASSWORD}@host", "not a URL"),
        (f"amqp://user:{PASSWORD} x@host/q", "whitespace"),
        ("", "empty"),
        (f"memory://user:{PASSWORD}@q", "malformed memory URL"),
    ],
)
def test_bad_urls_raise_invalid_url_without_the_password(url: str, problem: str) -> None:
    with pytest.raises(InvalidURL) as info:
        parse_url(url)
    text = f"{info.value} {info.value!r} {info.value.args}"
    assert problem in str(info.value)
    assert PASSWORD not in text
    assert "s3cr3t" not in text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"Endpoint=sb://ns/;SharedAccessKeyName=k;SharedAccessKey={SAS_KEY};Bogus", "KEY=VALUE"),
        (f"Endpoint=sb://ns/;SharedAccessKey={SAS_KEY}", "both SharedAccessKeyName"),
        (f"SharedAccessKeyName=k;SharedAccessKey={SAS_KEY}", "has no Endpoint"),
        (
            f"Endpoint=http://ns/;SharedAccessKeyName=k;SharedAccessKey={SAS_KEY}",
            "must look like sb://",
        ),
        (
            f"Endpoint=sb://ns:abc/;SharedAccessKeyName=k;SharedAccessKey={SAS_KEY}",
            "malformed Endpoint",
        ),
        (
            f"Endpoint=sb://ns/;SharedAccessKeyName=k;SharedAccessKey={SAS_KEY};Colour=blue",
            "unknown key",
        ),
        (
            f"Endpoint=sb://ns/;SharedAccessKeyName=k;SharedAccessKey={SAS_KEY};SharedAccessKey=x",
            "given twice",
        ),
        (
            f"Endpoint=sb://ns/;SharedAccessKeyName=k;SharedAccessKey={SAS_KEY};"
            "UseDevelopmentEmulator=maybe",
            "true or false",
        ),
    ],
)
def test_bad_connection_strings_raise_invalid_url_without_the_key(text: str, problem: str) -> None:
    with pytest.raises(InvalidURL) as info:
        parse_url(text)
    rendered = f"{info.value} {info.value!r} {pickle.loads(pickle.dumps(info.value))}"
    assert problem in str(info.value)
    assert SAS_KEY not in rendered
    assert "AbCdEf" not in rendered


def test_from_url_errors_never_show_secrets() -> None:
    for url in (
        f"amqp://user:{PASSWORD}@host:bad/q",
        f"Endpoint=sb://ns/;SharedAccessKeyName=k;SharedAccessKey={SAS_KEY};Nope=1",
    ):
        with pytest.raises(InvalidURL) as info:
            JobQueue.from_url(url)
        assert PASSWORD not in str(info.value)
        assert SAS_KEY not in str(info.value)


def test_prefetch_below_one_is_invalid() -> None:
    for bad in (0, -1, 1.5, True, "10"):
        with pytest.raises(InvalidSetting, match="prefetch must be an int >= 1") as info:
            JobQueue.from_url("amqp://user:hunter2@host/q", prefetch=bad)  # type: ignore[arg-type]
        assert "hunter2" not in str(info.value)


def test_memory_urls_refuse_network_settings() -> None:
    with pytest.raises(UnsupportedFeature, match="tls"):
        JobQueue.from_url("memory://q", tls=True)


def test_a_queue_is_required() -> None:
    with pytest.raises(InvalidSetting, match="no queue given") as info:
        JobQueue.from_url("amqp://user:hunter2@host")
    assert "hunter2" not in str(info.value)


def test_queue_repr_and_url_are_redacted() -> None:
    queue = JobQueue.from_url("memory://ns/q")
    assert queue.url == "memory://ns/q"
    assert "memory://ns/q" in repr(queue)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("amqp://guest:guest@h:5672/q", "amqp://guest:***@h:5672/q"),
        ("see amqps://u:p@ss@h/q now", "see amqps://u:***@h/q now"),
        ("amqp://h/q", "amqp://h/q"),
        ("amqp://user@h/q", "amqp://user@h/q"),
        (
            "Endpoint=sb://x/;SharedAccessKey=k+/=;EntityPath=q",
            "Endpoint=sb://x/;SharedAccessKey=***;EntityPath=q",
        ),
        ("SharedAccessSignature sr=a&sig=abc&se=1", "SharedAccessSignature sr=a&sig=***&se=1"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_secret_hides_its_value() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in f"{secret} {secret!r}"
    assert secret.reveal() == "hunter2"
