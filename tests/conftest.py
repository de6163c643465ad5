"""Shared test configuration: asyncio via anyio's pytest plugin, and the CI rule for brokers.

Under ``CI=true`` a test whose broker or peer cannot be reached *fails*; elsewhere it is skipped,
so a developer without RabbitMQ or Node can still run the rest. Use :func:`unavailable`.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}

#: The RabbitMQ the broker tests use (scripts/brokers/rabbitmq.sh sets it up).
RABBITMQ_URL = os.environ.get("AMQP1Q_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")
RABBITMQ_MANAGEMENT_URL = os.environ.get(
    "AMQP1Q_RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672"
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def unavailable(reason: str) -> NoReturn:
    """A peer this test needs is missing: fail under CI, skip elsewhere."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: broker tests never skip)", pytrace=False)
    pytest.skip(reason)
