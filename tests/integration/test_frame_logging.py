"""Frame logging against the embedded broker: with ``amqp1q.frames`` at DEBUG every frame of a
PLAIN-authenticated connection is logged, payloads cut short and the password nowhere; with
the logger off, nothing."""

from __future__ import annotations

import asyncio
import base64
import logging
import re

import pytest

from amqp1q import Job, JobQueue
from amqp1q.testing import Broker

pytestmark = pytest.mark.anyio

PASSWORD = "Zq8-n0t:a/r3al@pa55w%rd"


def _secret_forms() -> list[str]:
    plain = f"\0alice\0{PASSWORD}".encode()
    return [PASSWORD, base64.b64encode(plain).decode(), PASSWORD.encode().hex(), repr(plain)[2:-1]]


async def _push_and_consume(broker: Broker, payload: bytes) -> None:
    async with JobQueue.from_url(broker.url_for("alice"), queue="frames") as queue:
        await queue.push(Job("blob", payload))
        async with queue.consume() as consumer:
            job = await asyncio.wait_for(consumer.receive(), 5)
            assert job is not None
            assert job.body == payload
            await job.ack()


async def test_frames_are_logged_with_payloads_cut_and_no_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="amqp1q.frames")
    payload = bytes(range(256)) * 4  # 1 KiB
    async with Broker(users={"alice": PASSWORD}) as broker:
        await _push_and_consume(broker, payload)
        where = f"127.0.0.1:{broker.port}"
    records = [r for r in caplog.records if r.name == "amqp1q.frames"]
    lines = [r.getMessage() for r in records]
    assert all(line.startswith(where + " ") for line in lines)
    init = "-> @sasl-init(65) [mechanism=:PLAIN, initial-response=***]"
    assert any(init in line for line in lines)
    sent = [line for line in lines if "-> @transfer" in line]
    received = [line for line in lines if "<- @transfer" in line]
    assert sent
    assert received
    for line in sent + received:
        cut = re.search(r"…\((\d+) bytes\)$", line)  # the encoded message: over 1 KiB
        assert cut is not None, line
        assert int(cut[1]) > len(payload)
        assert len(line) < 700
    for record in records:
        text = record.getMessage() + repr(vars(record))
        for secret in _secret_forms():
            assert secret not in text


async def test_with_the_logger_off_nothing_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="amqp1q.frames")
    async with Broker(users={"alice": PASSWORD}) as broker:
        await _push_and_consume(broker, b"x" * 1024)
    assert not [r for r in caplog.records if r.name.startswith("amqp1q.frames")]
