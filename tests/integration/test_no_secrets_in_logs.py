"""A failing authenticated connect leaves no password anywhere: not in any log record (message,
arguments, extras, exception text) at DEBUG, not on stdout or stderr, not in the error's str, repr
or traceback -- against the embedded broker, nothing at all, a silent peer, a cut connection, a
TLS failure and RabbitMQ."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import ssl
import traceback
import urllib.parse
from collections.abc import AsyncIterator

import pytest
import trustme

from amqp1q import (
    Amqp1qConnectionError,
    Amqp1qError,
    AuthenticationFailed,
    ConnectFailed,
    InvalidURL,
    JobQueue,
    TLSConfig,
    TLSError,
)
from amqp1q.testing import Broker, FaultProxy

from ..conftest import unavailable

pytestmark = pytest.mark.anyio

USER = "alice"
#: Distinctive, and with characters a URL must quote, so that both forms can be looked for.
PASSWORD = "Zq8-n0t:a/r3al@pa55w%rd"
QUOTED = urllib.parse.quote(PASSWORD, safe="")


def _secret_forms(user: str = USER) -> list[str]:
    """Every form the password could leak in: as is, URL-quoted, and SASL PLAIN's initial
    response ("\\0user\\0password") in base64, hex and repr."""
    plain = f"\0{user}\0{PASSWORD}".encode()
    return [
        PASSWORD,
        QUOTED,
        base64.b64encode(plain).decode(),
        base64.b64encode(PASSWORD.encode()).decode(),
        PASSWORD.encode().hex(),
        repr(plain)[2:-1],
    ]


def _url(host: str, port: int, *, scheme: str = "amqp", user: str = USER) -> str:
    return f"{scheme}://{user}:{QUOTED}@{host}:{port}/jobs"


@pytest.fixture
def capture(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> pytest.LogCaptureFixture:
    """Every log record of every logger, at DEBUG; Proton's own frame trace stays off."""
    monkeypatch.delenv("PN_TRACE_FRM", raising=False)
    monkeypatch.delenv("PN_TRACE_RAW", raising=False)
    caplog.set_level(logging.DEBUG)
    for name in ("amqp1q", "amqp1q.proton", "amqp1q.testing", "amqp1q.queue", "asyncio"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def _record_text(record: logging.LogRecord) -> str:
    parts = [str(record.msg), repr(record.args), repr(vars(record))]
    try:
        parts.append(record.getMessage())
    except (TypeError, ValueError):  # a malformed record still shows its raw parts above
        pass
    if record.exc_info:
        parts.append("".join(traceback.format_exception(*record.exc_info)))
    if record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    return "\n".join(parts)


def _error_text(error: BaseException) -> str:
    parts = [str(error), repr(error), "".join(traceback.format_exception(error))]
    if isinstance(error, Amqp1qError):
        parts += [repr(value) for value in vars(error).values()]
    return "\n".join(parts)


def assert_no_secret(
    capture: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    error: BaseException,
    *,
    queue: JobQueue | None = None,
    user: str = USER,
) -> None:
    assert capture.records, "nothing was logged: the capture is not working"
    out, err = capfd.readouterr()
    texts = {"stdout": out, "stderr": err, "error": _error_text(error)}
    if queue is not None:
        texts["queue"] = f"{queue!r} {queue.url}"
    for index, record in enumerate(capture.records):
        texts[f"log record {index} ({record.name}: {record.msg!r})"] = _record_text(record)
    for where, text in texts.items():
        for form in _secret_forms(user):
            assert form not in text, f"the password ({form!r}) leaked into {where}"


async def _fail(
    url: str, *, connect_timeout: float = 5, tls: TLSConfig | None = None
) -> tuple[JobQueue, Amqp1qError]:
    queue = JobQueue.from_url(url, connect_timeout=connect_timeout, tls=tls)
    with pytest.raises(Amqp1qError) as caught:
        await asyncio.wait_for(queue.open(), 15)
    return queue, caught.value


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    """A broker that knows alice, with another password, and takes no anonymous logins."""
    async with Broker(users={USER: "the-right-one"}, anonymous=False) as broker:
        yield broker


async def test_a_refused_password(
    broker: Broker, capture: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    queue, error = await _fail(_url(broker.host, broker.port))
    assert isinstance(error, AuthenticationFailed)
    assert_no_secret(capture, capfd, error, queue=queue)


async def test_an_unknown_user(
    broker: Broker, capture: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    queue, error = await _fail(_url(broker.host, broker.port, user="mallory"))
    assert isinstance(error, AuthenticationFailed)
    assert_no_secret(capture, capfd, error, queue=queue, user="mallory")


async def test_nothing_listening(
    capture: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    queue, error = await _fail(_url("127.0.0.1", _free_port()))
    assert isinstance(error, ConnectFailed)
    assert_no_secret(capture, capfd, error, queue=queue)


async def test_a_silent_peer_times_out(
    broker: Broker, capture: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    async with FaultProxy(broker.host, broker.port) as proxy:
        proxy.stall()
        queue, error = await _fail(_url(proxy.host, proxy.port), connect_timeout=0.5)
    assert isinstance(error, ConnectFailed)
    assert_no_secret(capture, capfd, error, queue=queue)


async def test_a_connection_cut_after_the_credentials_went_out(
    broker: Broker, capture: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    async with FaultProxy(broker.host, broker.port) as proxy:
        # A first attempt counts the bytes of the whole SASL exchange, the refusal last ...
        await _fail(_url(proxy.host, proxy.port))
        exchange = proxy.bytes_forwarded
        # ... a second is cut one byte short of that: the credentials went out, no outcome came.
        proxy.cut_after(exchange - 1)
        queue, error = await _fail(_url(proxy.host, proxy.port))
    assert isinstance(error, Amqp1qConnectionError)
    assert proxy.cuts == 1
    assert_no_secret(capture, capfd, error, queue=queue)


async def test_a_failed_tls_handshake(
    capture: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    async with Broker(ssl=context, users={USER: "the-right-one"}) as broker:
        queue, error = await _fail(_url(broker.host, broker.port, scheme="amqps"), tls=TLSConfig())
    assert isinstance(error, TLSError)
    assert_no_secret(capture, capfd, error, queue=queue)


def test_an_invalid_url(
    capture: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    logging.getLogger("amqp1q").debug("capture check")  # from_url may log nothing at all
    with pytest.raises(InvalidURL) as caught:
        JobQueue.from_url(f"amqp://{USER}:{QUOTED}@127.0.0.1:not-a-port/jobs")
    assert_no_secret(capture, capfd, caught.value)


@pytest.mark.rabbitmq
async def test_a_wrong_password_at_rabbitmq(
    capture: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=2):
            pass
    except OSError as exc:
        unavailable(f"RabbitMQ is not reachable on 127.0.0.1:5672: {exc}")
    queue, error = await _fail(_url("127.0.0.1", 5672, user="guest"))
    assert isinstance(error, AuthenticationFailed)
    assert_no_secret(capture, capfd, error, queue=queue, user="guest")


@pytest.mark.parametrize("form", _secret_forms())
def test_the_check_finds_a_password_wherever_it_is_logged(
    capture: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], form: str
) -> None:
    # Guard against a check that passes vacuously: hide each form in an argument.
    logging.getLogger("amqp1q.proton").debug("sasl init %r", {"response": form})
    with pytest.raises(AssertionError, match="leaked into log record"):
        assert_no_secret(capture, capfd, ConnectFailed("refused"))
