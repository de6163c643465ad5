"""RabbitMQ's management API through httpx (``_management_http``): https verified by the queue's
own TLS settings (a trustme CA, ``server_hostname``, and ``FaultProxy`` terminating TLS in front
of RabbitMQ's AMQP and management ports), and the errors for an untrusted certificate, refused
credentials (the password never shown), a port with nothing listening, a plain request to a TLS
port, a queue that is gone; and a purge that counts exactly what it removed."""

from __future__ import annotations

import socket
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread
import pytest
import trustme

from amqp1q import (
    AuthenticationFailed,
    ConnectFailed,
    Job,
    JobQueue,
    QueueNotFound,
    TLSConfig,
    TLSError,
)
from amqp1q.adapters.proton._rabbitmq_inspect import ENV_URL
from amqp1q.adapters.proton.rabbitmq_setup import RabbitMQManagement
from amqp1q.testing import FaultProxy

from ..conftest import RABBITMQ_MANAGEMENT_URL, RABBITMQ_URL

pytestmark = [pytest.mark.anyio, pytest.mark.rabbitmq]

WRONG_PASSWORD = "not-the-password-4f1d"


def _address(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 0


def _server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*(names or ("127.0.0.1", "localhost"))).configure_cert(context)
    return context


@pytest.fixture
async def tls_ports(ca: trustme.CA, rabbitmq: RabbitMQManagement) -> AsyncIterator[tuple[str, str]]:
    """``(amqps URL, https management URL)``: TLS (certificates of ``ca``) in front of RabbitMQ."""
    context = _server_context(ca)
    amqp = await FaultProxy(*_address(RABBITMQ_URL), ssl=context).start()
    management = await FaultProxy(*_address(RABBITMQ_MANAGEMENT_URL), ssl=context).start()
    try:
        yield (
            amqp.url_for("amqps", userinfo="guest:guest"),
            management.url_for("https", userinfo="guest:guest"),
        )
    finally:
        await management.stop()
        await amqp.stop()


async def test_https_management_is_verified_by_the_queues_tls_settings(
    tls_ports: tuple[str, str],
    ca_file: Path,
    rabbitmq_queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    amqps, https = tls_ports
    monkeypatch.setenv(ENV_URL, https)
    async with JobQueue.from_url(
        amqps, queue=rabbitmq_queue, tls=TLSConfig(root_ca=ca_file), connect_timeout=5
    ) as queue:
        await queue.push(Job("over-https", {"n": 1}))
        (peeked,) = await queue.peek(5)
        assert peeked.payload == {"n": 1}
        depth = await queue.depth()
        assert depth.source == "rabbitmq-management"
    # (the set-up's calls block: in a thread, for the proxies in this event loop to answer)
    setup = RabbitMQManagement(https, tls={"root_ca": str(ca_file)})
    info = await anyio.to_thread.run_sync(setup.queue_info, rabbitmq_queue)
    assert info is not None
    assert info["name"] == rabbitmq_queue
    with pytest.raises(TLSError, match="certificate verify failed"):
        # the system's CAs do not know trustme's
        await anyio.to_thread.run_sync(RabbitMQManagement(https).overview)


async def test_an_untrusted_management_certificate_is_a_tls_error(
    tls_ports: tuple[str, str],
    ca_file: Path,
    rabbitmq_queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    amqps, _ = tls_ports
    other = await FaultProxy(
        *_address(RABBITMQ_MANAGEMENT_URL), ssl=_server_context(trustme.CA())
    ).start()
    try:
        monkeypatch.setenv(ENV_URL, other.url_for("https", userinfo="guest:guest"))
        async with JobQueue.from_url(
            amqps, queue=rabbitmq_queue, tls=TLSConfig(root_ca=ca_file), connect_timeout=5
        ) as queue:
            with pytest.raises(TLSError, match="certificate verify failed") as caught:
                await queue.depth()
            assert "guest:guest" not in str(caught.value)
        skip = TLSConfig(root_ca=ca_file, insecure_skip_verify=True)
        async with JobQueue.from_url(amqps, queue=rabbitmq_queue, tls=skip) as queue:
            assert (await queue.depth()).source == "rabbitmq-management"
    finally:
        await other.stop()


async def test_server_hostname_is_the_name_the_management_api_is_verified_for(
    ca: trustme.CA, ca_file: Path, rabbitmq_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = _server_context(ca, "rabbit.example")  # 127.0.0.1 is not among its names
    amqp = await FaultProxy(*_address(RABBITMQ_URL), ssl=context).start()
    management = await FaultProxy(*_address(RABBITMQ_MANAGEMENT_URL), ssl=context).start()
    try:
        monkeypatch.setenv(ENV_URL, management.url_for("https", userinfo="guest:guest"))
        tls = TLSConfig(root_ca=ca_file, server_hostname="rabbit.example")
        url = amqp.url_for("amqps", userinfo="guest:guest")
        async with JobQueue.from_url(url, queue=rabbitmq_queue, tls=tls) as queue:
            assert (await queue.depth()).source == "rabbitmq-management"
        wrong = RabbitMQManagement(
            management.url_for("https", userinfo="guest:guest"), tls={"root_ca": str(ca_file)}
        )
        with pytest.raises(TLSError, match="certificate verify failed"):
            await anyio.to_thread.run_sync(wrong.overview)  # verified for 127.0.0.1: refused
    finally:
        await management.stop()
        await amqp.stop()


async def test_a_plain_request_to_a_tls_port_says_so(
    tls_ports: tuple[str, str], rabbitmq_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_URL, tls_ports[1].replace("https://", "http://"))
    async with JobQueue.from_url(RABBITMQ_URL, queue=rabbitmq_queue) as queue:
        with pytest.raises(ConnectFailed, match="https"):
            await queue.depth()


async def test_refused_credentials_never_show_the_password(
    rabbitmq_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, port = _address(RABBITMQ_MANAGEMENT_URL)
    wrong = f"http://guest:{WRONG_PASSWORD}@{host}:{port}"
    monkeypatch.setenv(ENV_URL, wrong)
    async with JobQueue.from_url(RABBITMQ_URL, queue=rabbitmq_queue) as queue:
        with pytest.raises(AuthenticationFailed, match="401") as caught:
            await queue.depth()
    assert WRONG_PASSWORD not in str(caught.value)
    assert "'guest'" in str(caught.value)
    with pytest.raises(AuthenticationFailed) as setup_caught:
        RabbitMQManagement(wrong).setup_job_queue(rabbitmq_queue)
    assert WRONG_PASSWORD not in str(setup_caught.value)


async def test_nothing_listening_is_connect_failed(
    rabbitmq_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a port nothing listens on (bound, never listening)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        url = f"http://guest:{WRONG_PASSWORD}@127.0.0.1:{port}"
        monkeypatch.setenv(ENV_URL, url)
        async with JobQueue.from_url(RABBITMQ_URL, queue=rabbitmq_queue) as queue:
            with pytest.raises(ConnectFailed, match="rabbitmq_management plugin") as caught:
                await queue.depth()
        assert WRONG_PASSWORD not in str(caught.value)
        with pytest.raises(ConnectFailed):
            RabbitMQManagement(url).overview()


async def test_a_queue_that_is_gone_is_queue_not_found(rabbitmq: RabbitMQManagement) -> None:
    name = f"amqp1q-it-gone-{id(rabbitmq):x}"
    rabbitmq.setup_job_queue(name)
    try:
        async with JobQueue.from_url(RABBITMQ_URL, queue=name) as queue:
            await queue.depth()
            rabbitmq.delete_queue(name)
            with pytest.raises(QueueNotFound) as caught:
                await queue.peek(1)
            assert caught.value.queue == name
    finally:
        rabbitmq.delete_queue(name)
        rabbitmq.delete_queue(f"{name}.dlq")


async def test_purge_returns_the_number_it_removed(rabbitmq_queue: str) -> None:
    async with JobQueue.from_url(RABBITMQ_URL, queue=rabbitmq_queue) as queue:
        assert await queue.purge_dead_letters() == 0
        async with queue.dead_letter_queue() as dlq:
            # more than one batch of the purge's management ``get``
            await dlq.push_many([Job("dead", {"n": n}) for n in range(1234)])
        assert await queue.purge_dead_letters() == 1234
        assert await queue.peek(5, dead_letter=True) == []
        await queue.push_many([Job("live", {"n": n}) for n in range(3)])
        assert await queue.purge_dead_letters() == 0
        assert len(await queue.peek(5)) == 3
