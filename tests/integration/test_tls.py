"""TLS through Python's ssl on the event loop, and SASL EXTERNAL with a client certificate,
against the embedded broker serving amqps:// with certificates made here by openssl."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from amqp1q import AuthenticationFailed, Job, JobQueue, TLSConfig, TLSError
from amqp1q.testing import Broker

from ..conftest import unavailable

pytestmark = pytest.mark.anyio


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (CN=worker-1)."""
    if shutil.which("openssl") is None:
        unavailable("openssl is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=amqp1q test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    for name, extra in (("server", "subjectAltName=IP:127.0.0.1"), ("client", None)):
        subject = "/CN=127.0.0.1" if name == "server" else "/CN=worker-1"
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)  # fmt: skip
        sign = ["x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-out", f"{name}.pem"]  # fmt: skip
        if extra:
            (d / f"{name}.ext").write_text(extra + "\n")
            sign += ["-extfile", f"{name}.ext"]
        _openssl(*sign, cwd=d)
    return d


def _server_context(pki: Path, *, client_certs: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    if client_certs:
        context.load_verify_locations(pki / "ca.pem")
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


async def _round_trip(url: str, tls: TLSConfig) -> Job:
    async with JobQueue.from_url(url, queue="secure", tls=tls) as queue:
        await queue.push(Job("over-tls", b"secret payload"))
        async with queue.consume() as consumer:
            job = await asyncio.wait_for(consumer.receive(), 5)
            await job.ack()
            return job


async def test_amqps_with_the_ca_verified(pki: Path) -> None:
    async with Broker(ssl=_server_context(pki, client_certs=False)) as broker:
        assert broker.url.startswith("amqps://")
        job = await _round_trip(broker.url, TLSConfig(root_ca=pki / "ca.pem"))
        assert job.body == b"secret payload"


async def test_an_untrusted_certificate_is_tls_error(pki: Path) -> None:
    async with Broker(ssl=_server_context(pki, client_certs=False)) as broker:
        queue = JobQueue.from_url(broker.url, queue="secure", tls=TLSConfig(), connect_timeout=5)
        with pytest.raises(TLSError) as caught:
            await queue.open()
        assert "certificate" in str(caught.value).lower()


async def test_insecure_skip_verify_connects_anyway(pki: Path) -> None:
    async with Broker(ssl=_server_context(pki, client_certs=False)) as broker:
        job = await _round_trip(broker.url, TLSConfig(insecure_skip_verify=True))
        assert job.name == "over-tls"


async def test_client_certificate_authenticates_with_sasl_external(pki: Path) -> None:
    async with Broker(ssl=_server_context(pki, client_certs=True), anonymous=False,
                      users={"someone": "pw"}) as broker:  # fmt: skip
        tls = TLSConfig(root_ca=pki / "ca.pem", cert=pki / "client.pem", key=pki / "client.key")
        job = await _round_trip(broker.url, tls)
        assert job.body == b"secret payload"
        # Without the certificate (and without a password) the broker refuses the connection.
        queue = JobQueue.from_url(broker.url, queue="secure", tls=TLSConfig(root_ca=pki / "ca.pem"))
        with pytest.raises(AuthenticationFailed):
            await queue.open()
