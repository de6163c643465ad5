"""pytest fixtures for testing code that uses amqp1q, on the embedded broker.

Opt in from a ``conftest.py``::

    pytest_plugins = ["amqp1q.testing.pytest_plugin"]

Then, in an async test (anyio's pytest plugin or pytest-asyncio)::

    async def test_worker(amqp1q_broker):
        async with JobQueue.from_url(amqp1q_broker.url, queue="emails") as queue:
            ...

``amqp1q_broker`` is a fresh :class:`~amqp1q.testing.Broker` per test on a free port. Options
come from the ``amqp1q_broker_options`` fixture (override it to set users, strict mode, ...).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from ._broker import Broker

__all__ = ["amqp1q_broker", "amqp1q_broker_options"]


@pytest.fixture
def amqp1q_broker_options() -> dict[str, Any]:
    """Keyword arguments for the test's :class:`Broker` (override to change them)."""
    return {}


@pytest.fixture
async def amqp1q_broker(amqp1q_broker_options: dict[str, Any]) -> AsyncIterator[Broker]:
    """An embedded AMQP 1.0 broker, started on a free port and stopped after the test."""
    broker = Broker(**amqp1q_broker_options)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()
