"""Backends the shared queue-semantics suite runs against.

Each backend makes fresh, unopened :class:`JobQueue` objects on queues no other test uses. A new
adapter joins the suite by adding a :class:`Backend` subclass and its name to ``BACKENDS``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from amqp1q import JobQueue


class Backend:
    """Makes queues for one test. Subclasses override :meth:`make_queue` and the flags."""

    name = "abstract"
    #: Retry delays and ``delay`` are honoured to within this many seconds.
    timing_slack = 0.05

    def __init__(self) -> None:
        self.run_id = uuid.uuid4().hex[:12]

    def queue_name(self, name: str) -> str:
        return f"amqp1q-test-{self.run_id}-{name}"

    async def make_queue(self, name: str = "jobs", **settings: Any) -> JobQueue:
        raise NotImplementedError

    async def cleanup(self) -> None:
        """Called once after the test."""


class MemoryBackend(Backend):
    name = "memory"
    timing_slack = 0.02

    async def make_queue(self, name: str = "jobs", **settings: Any) -> JobQueue:
        return JobQueue.from_url(f"memory://{self.run_id}/{name}", **settings)


BACKENDS: dict[str, type[Backend]] = {"memory": MemoryBackend}


@pytest.fixture(params=sorted(BACKENDS))
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    instance = BACKENDS[request.param]()
    try:
        yield instance
    finally:
        await instance.cleanup()
