"""Frame logging (``amqp1q.frames``): proton's trace lines made safe, checked on their own and on
a client engine wired back to back to the embedded broker's SASL layer and a server engine."""

from __future__ import annotations

import base64
import logging

import pytest

from amqp1q.adapters.proton import _frames
from amqp1q.adapters.proton._client import ClientConnection
from amqp1q.adapters.proton._engine import Engine
from amqp1q.adapters.proton._links import ReceiverLink
from amqp1q.testing._sasl import SaslServer

from .test_engine import Peer, pump

PASSWORD = "Zq8-n0t:a/r3al@pa55w%rd"


def _secret_forms(user: str) -> list[str]:
    plain = f"\0{user}\0{PASSWORD}".encode()
    return [
        PASSWORD,
        PASSWORD[:6],
        base64.b64encode(plain).decode(),
        PASSWORD.encode().hex(),
        repr(plain)[2:-1],
    ]


# -- one trace line at a time ------------------------------------------------------------------


def test_a_plain_initial_response_is_masked() -> None:
    line = 'FRAME: 0 -> @sasl-init(65) [mechanism=:PLAIN, initial-response=b"\\x00alice\\x00s3cr"]'
    assert _frames.describe(line) == "0 -> @sasl-init(65) [mechanism=:PLAIN, initial-response=***]"


def test_a_sasl_binary_cut_short_by_proton_is_masked_to_the_end() -> None:
    line = 'FRAME: 0 -> @sasl-init(65) [mechanism=:PLAIN, initial-response=b"\\x00alice\\x00s3c'
    assert _frames.describe(line) == "0 -> @sasl-init(65) [mechanism=:PLAIN, initial-response=***"


def test_sasl_challenges_and_responses_are_masked_too() -> None:
    for name in ("sasl-challenge(66) [challenge", "sasl-response(67) [response"):
        described = _frames.describe(f'FRAME: 0 <- @{name}=b"r=nonce,s=salt"]')
        assert described is not None
        assert "nonce" not in described
        assert described.endswith("=***]")


def test_a_large_payload_keeps_its_first_64_bytes_and_its_size() -> None:
    payload = "\\x00Sp\\xc0\\x02\\x01A" + "x" * 2000  # proton's quoted text: 7 + 2000 bytes
    line = (
        'FRAME: 0 -> @transfer(20) [handle=0x0, delivery-id=0x0, delivery-tag=b"1", '
        f"message-format=0x0] (2007) {payload}"
    )
    described = _frames.describe(line)
    assert described == (
        '0 -> @transfer(20) [handle=0x0, delivery-id=0x0, delivery-tag=b"1", message-format=0x0] '
        "\\x00Sp\\xc0\\x02\\x01A" + "x" * 57 + "…(2007 bytes)"
    )


def test_a_small_payload_is_kept_whole() -> None:
    line = 'FRAME: 1 <- @transfer(20) [handle=0x0, delivery-tag=b"\\x01"] (5) hello'
    assert (
        _frames.describe(line) == '1 <- @transfer(20) [handle=0x0, delivery-tag=b"\\x01"] (5) hello'
    )


def test_brackets_and_quotes_inside_strings_do_not_end_the_field_list() -> None:
    line = 'FRAME: 0 -> @transfer(20) [name="a]b", tag=b"\\x22]"] (100) ' + "y" * 100
    assert _frames.describe(line) == (
        '0 -> @transfer(20) [name="a]b", tag=b"\\x22]"] ' + "y" * 64 + "…(100 bytes)"
    )


def test_a_long_binary_field_is_cut_and_a_string_ending_in_b_is_not_one() -> None:
    line = 'FRAME: 0 -> @attach(18) [name="hub", properties={:k=b"' + "\\xff" * 100 + '"}]'
    assert _frames.describe(line) == (
        '0 -> @attach(18) [name="hub", properties={:k=b"' + "\\xff" * 64 + '"…(100 bytes)}]'
    )


def test_headers_are_kept_and_raw_bytes_never_logged() -> None:
    assert _frames.describe("FRAME:   -> SASL") == "-> SASL"
    assert _frames.describe("FRAME:   <- EOS") == "<- EOS"
    assert _frames.describe('RAW: "AMQP\\x03\\x01\\x00\\x00\\x00alice\\x00s3cret"') is None


def test_urls_with_passwords_are_redacted_anywhere() -> None:
    described = _frames.describe(
        'FRAME: 0 <- @close(24) [error=@error(29) [description="amqp://u:pw@h"]]'
    )
    assert described is not None
    assert "pw" not in described


# -- a client engine over the embedded broker's SASL layer --------------------------------------


def _connect(client: Engine, server: Engine) -> None:
    """Client through the broker's own SASL layer to a server engine, then AMQP open."""
    sasl = SaslServer(anonymous=False, authenticate=lambda user, password: password == PASSWORD)
    client.open()
    for _ in range(50):
        out = client.data_to_send()
        if out:
            sasl.receive_data(out)
        back = sasl.data_to_send()
        if back:
            client.receive_data(back)
        if sasl.done:
            assert sasl.succeeded
            server.receive_data(sasl.leftover)
            break
    pump(client, server)
    assert client.remote_opened


@pytest.fixture
def frames_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="amqp1q.frames")
    return caplog


def test_a_sasl_plain_session_logs_every_frame_safely(frames_log: pytest.LogCaptureFixture) -> None:
    client_peer, server_peer = Peer(), Peer()
    client = Engine(
        client_peer, container_id="c", user="alice", password=PASSWORD, mechanisms="PLAIN"
    )
    _frames.trace_frames(client, where="127.0.0.1:5672", queue="jobs")
    server = Engine(server_peer, server=True, container_id="s", sasl=False)
    _connect(client, server)
    sender = client.open_sender("jobs")
    pump(client, server)
    (remote,) = server_peer.links
    assert isinstance(remote, ReceiverLink)
    remote.flow(1)
    pump(client, server)
    body = b"\x00Sw\xb0\x00\x00\x04\x00" + bytes(range(256)) * 4  # a 1 KiB amqp-value payload
    sender.send(body, lambda outcome: None)
    pump(client, server)
    client.close()
    pump(client, server)
    assert [received for _, received in server_peer.received] == [body]

    records = [r for r in frames_log.records if r.name == "amqp1q.frames"]
    lines = [r.getMessage() for r in records]
    assert all(r.levelno == logging.DEBUG and r.queue == "jobs" for r in records)  # type: ignore[attr-defined]
    assert all(line.startswith("127.0.0.1:5672 ") for line in lines)
    assert any("-> SASL" in line for line in lines)
    [init] = [line for line in lines if "@sasl-init" in line]
    assert init.endswith("[mechanism=:PLAIN, initial-response=***]")
    for line in lines:
        for secret in _secret_forms("alice"):
            assert secret not in line
    [transfer] = [line for line in lines if "-> @transfer" in line]
    assert transfer.endswith(f"…({len(body)} bytes)")
    assert len(transfer) < 400  # not the 1 KiB (4 KiB quoted) payload
    assert any("-> @open" in line for line in lines)
    assert any("<- @open" in line for line in lines)
    assert any("-> @close" in line for line in lines)


@pytest.mark.anyio
async def test_the_logger_decides_as_a_connection_opens(caplog: pytest.LogCaptureFixture) -> None:
    def connection() -> ClientConnection:
        return ClientConnection(
            host="127.0.0.1",
            port=5672,
            ssl_context=None,
            server_hostname=None,
            container_id="c",
            user="alice",
            password=PASSWORD,
            mechanisms="PLAIN",
            virtual_host=None,
            idle_timeout=None,
            properties={},
            queue="jobs",
        )

    caplog.set_level(logging.INFO, logger="amqp1q.frames")
    quiet = connection()
    assert quiet.engine._transport.tracer is None  # off: proton formats nothing at all
    quiet.engine.open()
    quiet.engine.data_to_send()
    caplog.set_level(logging.DEBUG, logger="amqp1q.frames")
    quiet.engine.close()
    quiet.engine.data_to_send()
    assert not [r for r in caplog.records if r.name == "amqp1q.frames"]

    traced = connection()
    assert traced.engine._transport.tracer is not None
    traced.engine.open()
    traced.engine.data_to_send()
    assert [r for r in caplog.records if r.name == "amqp1q.frames"]
