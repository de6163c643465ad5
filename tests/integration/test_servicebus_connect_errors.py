"""Opening a Service Bus queue fails at once, naming why: a refused port, an unknown host, a TLS
failure, refused credentials, a missing queue. The azure-servicebus SDK against the embedded
broker's Service Bus emulation (and a TLS listener with a trustme certificate).

Issue 19: each of these waited out the 10 s connect timeout, then said only "could not connect
... within 10 s". The timeout here is 30 s: whatever ends the open before it is the cause."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from azure.servicebus import TransportType

from amqp1q import (
    Amqp1qError,
    AuthenticationFailed,
    ConnectFailed,
    JobQueue,
    QueueNotFound,
    TLSError,
)
from amqp1q.adapters.servicebus import ServiceBusAdapter
from amqp1q.testing import Broker

pytestmark = pytest.mark.anyio

KEY = "right-key-0123456789"
SLOW = 30.0  # the connect timeout: never what ends these opens
FAST = 10.0  # each must end well before it (measured: 0.02 s to 1 s)


def _free_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]  # held: nothing else takes it, nothing listens on it


async def _fails(queue: JobQueue) -> tuple[Amqp1qError, float]:
    started = time.monotonic()
    with pytest.raises(Amqp1qError) as caught:
        async with queue:
            pytest.fail("opened")
    elapsed = time.monotonic() - started
    assert elapsed < FAST, f"took {elapsed:.1f} s: {caught.value}"
    assert KEY not in f"{caught.value} {caught.value!r}"
    return caught.value, elapsed


def _emulator(host: str, port: int, *, key: str = KEY, queue: str = "jobs") -> str:
    return (
        f"Endpoint=sb://{host}:{port};SharedAccessKeyName=RootManageSharedAccessKey;"
        f"SharedAccessKey={key};UseDevelopmentEmulator=true;EntityPath={queue}"
    )


async def test_a_refused_port_is_named() -> None:
    for port in _free_port():
        error, _ = await _fails(
            JobQueue.from_url(_emulator("127.0.0.1", port), connect_timeout=SLOW)
        )
        assert isinstance(error, ConnectFailed)
        assert "connection refused" in str(error)
        assert f"('127.0.0.1', {port})" in str(error)


async def test_an_unknown_host_is_named() -> None:
    url = _emulator("no-such-namespace.invalid", 5672)
    error, _ = await _fails(JobQueue.from_url(url, connect_timeout=SLOW))
    assert isinstance(error, ConnectFailed)
    assert "its host name does not resolve" in str(error)


@pytest.fixture
async def broker() -> Any:
    async with Broker(
        servicebus=True, strict=True, queues=["jobs"], users={"RootManageSharedAccessKey": KEY}
    ) as running:
        yield running


async def test_refused_credentials_are_named(broker: Broker) -> None:
    url = _emulator(broker.host, broker.port, key="wrong-key")
    error, _ = await _fails(JobQueue.from_url(url, connect_timeout=SLOW))
    assert isinstance(error, AuthenticationFailed)
    assert "Service Bus refused the credentials" in str(error)
    assert "Status code: 401" in (error.description or "")
    assert "the signature does not match the key" in (error.description or "")


async def test_a_missing_queue_is_named(broker: Broker) -> None:
    url = _emulator(broker.host, broker.port, queue="absent")
    error, _ = await _fails(JobQueue.from_url(url, connect_timeout=SLOW))
    assert isinstance(error, QueueNotFound)
    assert "no queue 'absent'" in str(error)


async def test_a_tls_failure_is_named_and_a_trusted_ca_opens(tmp_path: Path) -> None:
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with Broker(servicebus=True, ssl=context, queues=["jobs"]) as tls_broker:
        url = (
            f"Endpoint=sb://localhost/;SharedAccessKeyName=k;SharedAccessKey={KEY};EntityPath=jobs"
        )
        options: dict[str, Any] = {
            # Service Bus listens on 5671: point the SDK at the test's listener instead.
            "custom_endpoint_address": f"sb://127.0.0.1:{tls_broker.port}",
            "transport_type": TransportType.Amqp,
        }
        untrusted = ServiceBusAdapter.from_connection_string(url, client_options=options)
        error, _ = await _fails(JobQueue(untrusted, connect_timeout=SLOW))
        assert isinstance(error, TLSError)
        assert "the certificate did not verify" in str(error)
        assert "connection_verify" in str(error)

        options["connection_verify"] = str(ca_file)
        trusted = ServiceBusAdapter.from_connection_string(url, client_options=options)
        async with JobQueue(trusted, connect_timeout=SLOW) as queue:
            assert queue.is_open
