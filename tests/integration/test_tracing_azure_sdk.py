"""Traces that cross between amqp1q and the azure-servicebus SDK with its tracing on.

The SDK (7.15) traces through azure-core's OpenTelemetry plugin
(``settings.tracing_implementation = "opentelemetry"``): per message a ``ServiceBus.message``
producer span whose context it writes to ``Diagnostic-Id`` and ``traceparent``, a
``ServiceBus.send`` span linked to those, and on receipt a ``ServiceBus.receive`` span linked to
the context each message carries. Both ends run against the embedded broker's Service Bus
emulation; amqp1q consumes and pushes through the Proton adapter and through its Service Bus
adapter.

Nothing here changes process-wide state for later tests: the azure-core setting is unset again,
and the OpenTelemetry SDK provider reaches the plugin through a patched ``trace.get_tracer``
(never ``set_tracer_provider``, which can be called once per process).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from amqp1q import Job, JobQueue
from amqp1q.testing import Broker

servicebus = pytest.importorskip("azure.servicebus")
servicebus_aio = pytest.importorskip("azure.servicebus.aio")
pytest.importorskip("azure.core.tracing.ext.opentelemetry_span")
from azure.core.settings import settings  # noqa: E402

ServiceBusMessage = servicebus.ServiceBusMessage
ServiceBusClient = servicebus_aio.ServiceBusClient

pytestmark = [pytest.mark.anyio]

ADAPTERS = ["proton", "servicebus"]


class Spans:
    """The finished spans, and the tracer the test starts its own spans with."""

    def __init__(self, exporter: InMemorySpanExporter, tracer: trace.Tracer) -> None:
        self.exporter = exporter
        self.tracer = tracer

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.exporter.get_finished_spans() if span.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        names = sorted({span.name for span in self.exporter.get_finished_spans()})
        assert len(found) == 1, f"{len(found)} spans named {name!r} among {names}"
        return found[0]


@pytest.fixture
def spans(
    monkeypatch: pytest.MonkeyPatch, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> Iterator[Spans]:
    """amqp1q's provider (``traced``) for azure-core too, with azure tracing turned on."""
    provider, exporter = traced

    def get_tracer(name: str, version: str | None = None, *_: Any, **kw: Any) -> trace.Tracer:
        return provider.get_tracer(name, version, schema_url=kw.get("schema_url"))

    # The plugin calls trace.get_tracer(...) on every span: the global API, patched for this test.
    monkeypatch.setattr(trace, "get_tracer", get_tracer)
    assert settings.tracing_implementation() is None, "azure-core tracing already on"
    settings.tracing_implementation = "opentelemetry"
    try:
        yield Spans(exporter, provider.get_tracer("test"))
    finally:
        settings.tracing_implementation.unset_value()


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    async with Broker(servicebus=True) as broker:
        yield broker


def _queue() -> str:
    return f"traced-{uuid.uuid4().hex[:8]}"


def _jobs(broker: Broker, queue: str, adapter: str) -> JobQueue:
    if adapter == "proton":
        return JobQueue.from_url(broker.url, queue=queue)
    return JobQueue.from_url(broker.servicebus_connection_string(queue))


def _client(broker: Broker) -> Any:
    return ServiceBusClient.from_connection_string(
        broker.servicebus_connection_string(), retry_total=0
    )


def _linked(span: ReadableSpan) -> set[tuple[int, int]]:
    return {(link.context.trace_id, link.context.span_id) for link in span.links}


def _ids(span: ReadableSpan) -> tuple[int, int]:
    return span.context.trace_id, span.context.span_id


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_a_message_the_sdk_sent_is_processed_in_the_senders_trace(
    spans: Spans, broker: Broker, adapter: str
) -> None:
    queue = _queue()
    async with _client(broker) as client, client.get_queue_sender(queue) as sender:
        with spans.tracer.start_as_current_span("checkout"):
            await sender.send_messages(ServiceBusMessage(b"{}", subject="bill", message_id="m1"))
    async with _jobs(broker, queue, adapter) as jobs, jobs.consume() as consumer:
        job = await consumer.receive(timeout=5)
        assert job is not None
        async with job.process():
            pass
    assert job.headers["Diagnostic-Id"] == job.headers["traceparent"]  # the SDK writes both
    checkout = spans.one("checkout")
    message = spans.one("ServiceBus.message")
    send = spans.one("ServiceBus.send")
    process = spans.one(f"process {queue}")
    assert message.kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    trace_id = checkout.context.trace_id
    assert {s.context.trace_id for s in (message, send, process)} == {trace_id}
    assert _ids(message) in _linked(send)
    assert process.parent is not None
    assert process.parent.span_id == message.context.span_id
    assert _ids(message) in _linked(process)


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_the_sdks_receive_span_links_to_the_job_push(
    spans: Spans, broker: Broker, adapter: str
) -> None:
    queue = _queue()
    async with _jobs(broker, queue, adapter) as jobs:
        with spans.tracer.start_as_current_span("signup"):
            await jobs.push(Job("welcome", {"to": "a@b.c"}))
    async with _client(broker) as client, client.get_queue_receiver(queue) as receiver:
        messages = await receiver.receive_messages(max_message_count=1, max_wait_time=5)
        assert len(messages) == 1
        properties = messages[0].application_properties
        await receiver.complete_message(messages[0])
    signup = spans.one("signup")
    send = spans.one(f"send {queue}")
    assert send.context.trace_id == signup.context.trace_id
    assert send.parent is not None
    assert send.parent.span_id == signup.context.span_id
    # The context is amqp1q's: with the Service Bus adapter, whose SDK traces too, the SDK kept
    # it rather than writing its own ServiceBus.message span's under a second key.
    traceparent = f"00-{send.context.trace_id:032x}-{send.context.span_id:016x}-"
    assert properties[b"traceparent"].decode().startswith(traceparent)
    if adapter == "servicebus":  # Diagnostic-Id is written for Service Bus only
        assert properties[b"Diagnostic-Id"] == properties[b"traceparent"]
    else:
        assert b"Diagnostic-Id" not in properties
    receives = spans.named("ServiceBus.receive")
    assert any(_ids(send) in _linked(receive) for receive in receives)


async def test_each_message_of_an_sdk_batch_is_processed_under_its_own_message_span(
    spans: Spans, broker: Broker
) -> None:
    queue = _queue()
    async with _client(broker) as client, client.get_queue_sender(queue) as sender:
        with spans.tracer.start_as_current_span("bulk"):
            await sender.send_messages([ServiceBusMessage(f"m{n}") for n in range(3)])
    async with _jobs(broker, queue, "proton") as jobs, jobs.consume() as consumer:
        for _ in range(3):
            job = await consumer.receive(timeout=5)
            assert job is not None
            async with job.process():
                pass
    bulk = spans.one("bulk")
    messages = spans.named("ServiceBus.message")
    processes = spans.named(f"process {queue}")
    assert len(messages) == len(processes) == 3
    assert {_ids(message) for message in messages} <= _linked(spans.one("ServiceBus.send"))
    assert {p.context.trace_id for p in processes} == {bulk.context.trace_id}
    assert {p.parent.span_id for p in processes if p.parent} == {
        m.context.span_id for m in messages
    }
    assert all(
        _linked(p) == {(p.context.trace_id, p.parent.span_id)} for p in processes if p.parent
    )
