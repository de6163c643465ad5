"""OpenTelemetry: a pushed and consumed job gives a producer span and a process span in one
trace, with the messaging attributes; the context crosses the wire in the job's properties.

The SDK's tracer provider is given to amqp1q for the test only (setting the global provider
would change every later test in the process)."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from amqp1q import Job, JobQueue, JobTooLarge, _tracing
from amqp1q.testing import Broker

pytestmark = pytest.mark.anyio


@pytest.fixture
def spans(traced: tuple[TracerProvider, InMemorySpanExporter]) -> InMemorySpanExporter:
    return traced[1]


async def test_push_and_process_share_one_trace(spans: InMemorySpanExporter) -> None:
    async with Broker() as broker:
        async with JobQueue.from_url(broker.url, queue="traced") as queue:
            receipt = await queue.push(Job("email.send", {"to": "a@b.c"}, headers={"t": "x"}))
            async with queue.consume() as consumer:
                job = await asyncio.wait_for(consumer.receive(), 5)
                assert job is not None
                async with job.process():
                    inner = trace.get_current_span()  # the handler runs inside the span
                    assert inner.get_span_context().is_valid
                assert job.headers["t"] == "x"
                assert "traceparent" in job.headers
    finished = {span.name: span for span in spans.get_finished_spans()}
    send, process = finished["send traced"], finished["process traced"]
    assert send.kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    assert process.context.trace_id == send.context.trace_id
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    for span, operation in ((send, "send"), (process, "process")):
        attributes = span.attributes or {}
        assert attributes["messaging.system"] == "amqp"
        assert attributes["messaging.destination.name"] == "traced"
        assert attributes["messaging.operation.type"] == operation
        assert attributes["messaging.operation.name"] == operation
        assert attributes["messaging.message.id"] == receipt.job_id
        assert attributes["server.address"] == "127.0.0.1"
        assert attributes["server.port"] == broker.port


async def test_baggage_where_a_job_was_pushed_is_current_where_it_is_processed(
    spans: InMemorySpanExporter,
) -> None:
    async with Broker() as broker:
        async with JobQueue.from_url(broker.url, queue="traced") as queue:
            token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
            try:
                await queue.push(Job("a", 1))
            finally:
                otel_context.detach(token)
            assert baggage.get_baggage("tenant") is None
            async with queue.consume() as consumer:
                job = await asyncio.wait_for(consumer.receive(), 5)
                assert job is not None
                assert job.headers["baggage"] == "tenant=acme"
                async with job.process():
                    assert baggage.get_baggage("tenant") == "acme"
                assert baggage.get_baggage("tenant") is None
    finished = {span.name: span for span in spans.get_finished_spans()}
    process = finished["process traced"]
    assert process.parent is not None
    assert process.parent.span_id == finished["send traced"].context.span_id


async def test_a_failing_handler_marks_its_span_as_an_error(spans: InMemorySpanExporter) -> None:
    async with Broker() as broker:
        async with JobQueue.from_url(broker.url, queue="traced") as queue:
            await queue.push_many([Job("a", 1), Job("b", 2)])
            async with queue.consume() as consumer:
                job = await asyncio.wait_for(consumer.receive(), 5)
                assert job is not None
                async with job.process():
                    raise RuntimeError("boom")
    finished = spans.get_finished_spans()
    # One send span for the batch (no single message id), the creation context of both jobs.
    sends = [span for span in finished if span.name == "send traced"]
    assert len(sends) == 1
    assert (sends[0].attributes or {})["messaging.batch.message_count"] == 2
    assert "messaging.message.id" not in (sends[0].attributes or {})
    process = next(span for span in finished if span.name == "process traced")
    assert process.parent is not None
    assert process.parent.span_id == sends[0].context.span_id
    assert process.status.status_code is StatusCode.ERROR
    assert "boom" in (process.status.description or "")


async def test_without_an_sdk_jobs_go_out_untouched() -> None:
    assert not _tracing.active()
    async with Broker() as broker:
        async with JobQueue.from_url(broker.url, queue="plain") as queue:
            await queue.push(Job("n", b"", headers={"k": "v"}))
            async with queue.consume() as consumer:
                job = await asyncio.wait_for(consumer.receive(), 5)
                assert job is not None
                assert dict(job.headers) == {"k": "v"}
                await job.ack()


async def test_a_batch_with_a_refused_job_marks_its_send_span_as_an_error(
    spans: InMemorySpanExporter,
) -> None:
    async with Broker(max_message_size=4096) as broker:
        async with JobQueue.from_url(broker.url, queue="traced") as queue:
            results = await queue.push_many(
                [Job("fits", b"x"), Job("too big", b"x" * 8192)], return_exceptions=True
            )
    assert isinstance(results[1], JobTooLarge)
    (send,) = [span for span in spans.get_finished_spans() if span.name == "send traced"]
    assert send.status.status_code is StatusCode.ERROR
    assert (send.status.description or "").startswith("1 of 2 jobs failed; the first: JobTooLarge")
