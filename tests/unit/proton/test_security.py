"""Security defaults of the Proton adapter that need no network to check."""

from __future__ import annotations

import logging

import pytest

from amqp1q import InvalidSetting, JobQueue

from ..conftest import NetworkUsedInUnitTest

pytestmark = pytest.mark.anyio


async def test_no_password_over_plaintext_to_a_remote_host_by_default() -> None:
    queue = JobQueue.from_url("amqp://app:s3cret-pw@192.0.2.10:5672/jobs")
    with pytest.raises(InvalidSetting, match="allow_plaintext_password") as caught:
        await queue.open()
    assert "s3cret-pw" not in str(caught.value)
    assert "amqps://" in str(caught.value)


async def test_opting_in_warns_and_then_connects(caplog: pytest.LogCaptureFixture) -> None:
    queue = JobQueue.from_url(
        "amqp://app:s3cret-pw@192.0.2.10:5672/jobs",
        allow_plaintext_password=True,
        connect_timeout=1,
    )
    with caplog.at_level(logging.WARNING), pytest.raises(NetworkUsedInUnitTest):
        await queue.open()  # past the check: the unit-test network guard stops the connect
    assert any("without TLS" in record.getMessage() for record in caplog.records)
    assert all("s3cret-pw" not in record.getMessage() for record in caplog.records)
