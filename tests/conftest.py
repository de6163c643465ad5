"""Shared test configuration: asyncio via anyio's pytest plugin, and the CI rule for brokers.

Under ``CI=true`` a test whose broker or peer cannot be reached *fails*; elsewhere it is skipped,
so a developer without RabbitMQ or Node can still run the rest. Use :func:`unavailable`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NoReturn

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from amqp1q import _tracing

IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}

#: The RabbitMQ the broker tests use (scripts/brokers/rabbitmq.sh sets it up).
RABBITMQ_URL = os.environ.get("AMQP1Q_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")
RABBITMQ_MANAGEMENT_URL = os.environ.get(
    "AMQP1Q_RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672"
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def traced(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """amqp1q's spans, recorded into memory by an SDK provider of this test's own (the global
    provider can be set once per process, so it is left alone)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(_tracing, "_tracer", provider.get_tracer("amqp1q"))
    monkeypatch.setattr(_tracing, "_get_provider", lambda: provider)
    monkeypatch.setattr(_tracing, "active", lambda: True)
    yield provider, exporter
    provider.shutdown()


def unavailable(reason: str) -> NoReturn:
    """A peer this test needs is missing: fail under CI, skip elsewhere."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: broker tests never skip)", pytrace=False)
    pytest.skip(reason)
