"""TLS against the embedded broker's amqps:// listener, with certificates made by trustme:
verification, host names, untrusted and self-signed certificates, and mutual TLS (SASL EXTERNAL)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import trustme

from amqp1q import (
    Amqp1qConnectionError,
    AuthenticationFailed,
    Job,
    JobQueue,
    TLSConfig,
    TLSError,
)
from amqp1q.testing import Broker

pytestmark = pytest.mark.anyio


def _server(cert: trustme.LeafCert, *, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    if client_ca is not None:
        client_ca.configure_trust(context)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


async def _round_trip(url: str, tls: TLSConfig) -> Job:
    async with JobQueue.from_url(url, queue="secure", tls=tls, connect_timeout=5) as queue:
        await queue.push(Job("over-tls", b"secret payload", headers={"h": "v"}))
        async with queue.consume() as consumer:
            job = await asyncio.wait_for(consumer.receive(), 5)
            assert job is not None
            await job.ack()
            return job


async def _refused(url: str, tls: TLSConfig) -> Amqp1qConnectionError:
    queue = JobQueue.from_url(url, queue="secure", tls=tls, connect_timeout=5)
    with pytest.raises(Amqp1qConnectionError) as caught:
        await asyncio.wait_for(queue.open(), 10)
    return caught.value


# -- the broker's certificate --------------------------------------------------------------------


async def test_a_certificate_from_the_given_ca_is_verified(ca: trustme.CA, ca_file: Path) -> None:
    async with Broker(ssl=_server(ca.issue_cert("127.0.0.1", "localhost"))) as broker:
        assert broker.url.startswith("amqps://127.0.0.1:")
        job = await _round_trip(broker.url, TLSConfig(root_ca=ca_file))
        assert (job.name, job.body, job.headers) == ("over-tls", b"secret payload", {"h": "v"})


async def test_server_hostname_is_the_name_verified(ca: trustme.CA, ca_file: Path) -> None:
    # Dial 127.0.0.1, verify "broker.example": a certificate with only that name passes.
    async with Broker(ssl=_server(ca.issue_cert("broker.example"))) as broker:
        tls = TLSConfig(root_ca=ca_file, server_hostname="broker.example")
        job = await _round_trip(broker.url, tls)
        assert job.body == b"secret payload"


@pytest.mark.parametrize(
    ("identities", "server_hostname"),
    [
        pytest.param(("other.example",), None, id="certificate-for-another-host"),
        pytest.param(("127.0.0.1", "localhost"), "wrong.example", id="wrong-server-hostname"),
    ],
)
async def test_a_wrong_host_name_is_tls_error(
    ca: trustme.CA, ca_file: Path, identities: tuple[str, ...], server_hostname: str | None
) -> None:
    async with Broker(ssl=_server(ca.issue_cert(*identities))) as broker:
        tls = TLSConfig(root_ca=ca_file, server_hostname=server_hostname)
        error = await _refused(broker.url, tls)
        assert isinstance(error, TLSError), repr(error)
        assert "certificate" in str(error).lower()


async def test_a_host_name_mismatch_is_named_in_the_error(ca: trustme.CA, ca_file: Path) -> None:
    async with Broker(ssl=_server(ca.issue_cert("other.example"))) as broker:
        error = await _refused(broker.url, TLSConfig(root_ca=ca_file))
        assert "hostname" in str(error).lower()


async def test_a_self_signed_certificate_without_root_ca_is_tls_error(
    ca: trustme.CA, tmp_path: Path
) -> None:
    # The CA's own certificate is self-signed: serve it, and trust only the system's CAs.
    cert, key = tmp_path / "self-signed.pem", tmp_path / "self-signed.key"
    ca.cert_pem.write_to_path(str(cert))
    ca.private_key_pem.write_to_path(str(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    async with Broker(ssl=context) as broker:
        error = await _refused(broker.url, TLSConfig())
        assert isinstance(error, TLSError), repr(error)
        assert "certificate" in str(error).lower()


async def test_a_certificate_from_an_unknown_ca_is_tls_error(
    ca: trustme.CA, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    async with Broker(ssl=_server(ca.issue_cert("127.0.0.1"))) as broker:
        for tls in (TLSConfig(), TLSConfig(root_ca=other)):
            error = await _refused(broker.url, tls)
            assert isinstance(error, TLSError), repr(error)
            assert "certificate" in str(error).lower()
        # ... while skipping verification connects (and says so in the log).
        job = await _round_trip(broker.url, TLSConfig(insecure_skip_verify=True))
        assert job.name == "over-tls"


# -- the client's certificate (mutual TLS) -------------------------------------------------------


async def test_mutual_tls_authenticates_with_sasl_external(
    ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    client = ca.issue_cert("worker-1.clients.example", common_name="worker-1")
    combined = tmp_path / "client.pem"  # the key and the chain in one file
    client.private_key_and_cert_chain_pem.write_to_path(str(combined))
    cert, key = tmp_path / "client-cert.pem", tmp_path / "client-key.pem"
    client.cert_chain_pems[0].write_to_path(str(cert))
    client.private_key_pem.write_to_path(str(key))
    context = _server(ca.issue_cert("127.0.0.1"), client_ca=ca)
    # No anonymous logins and no password offered: only the certificate can authenticate.
    async with Broker(ssl=context, anonymous=False, users={"someone": "pw"}) as broker:
        for tls in (
            TLSConfig(root_ca=ca_file, cert=cert, key=key),
            TLSConfig(root_ca=ca_file, cert=combined),
        ):
            job = await _round_trip(broker.url, tls)
            assert job.body == b"secret payload"
        # Without a client certificate the same broker refuses the login.
        error = await _refused(broker.url, TLSConfig(root_ca=ca_file))
        assert isinstance(error, AuthenticationFailed), repr(error)


async def test_a_client_certificate_from_an_unknown_ca_is_refused(
    ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    stranger = trustme.CA().issue_cert("intruder.example", common_name="intruder")
    combined = tmp_path / "stranger.pem"
    stranger.private_key_and_cert_chain_pem.write_to_path(str(combined))
    context = _server(ca.issue_cert("127.0.0.1"), client_ca=ca)
    context.verify_mode = ssl.CERT_REQUIRED
    async with Broker(ssl=context, anonymous=False, users={"someone": "pw"}) as broker:
        # With TLS 1.3 the server's refusal arrives after the client's handshake has finished,
        # so the client may see it as a failed handshake or as the connection dropping.
        error = await _refused(broker.url, TLSConfig(root_ca=ca_file, cert=combined))
        assert isinstance(error, Amqp1qConnectionError)
        assert broker.connection_count == 0


async def test_a_refused_client_certificate_is_tls_error(ca: trustme.CA, ca_file: Path) -> None:
    context = _server(ca.issue_cert("127.0.0.1"), client_ca=ca)
    context.verify_mode = ssl.CERT_REQUIRED
    async with Broker(ssl=context) as broker:
        error = await _refused(broker.url, TLSConfig(root_ca=ca_file))  # no certificate at all
        assert isinstance(error, TLSError), repr(error)
