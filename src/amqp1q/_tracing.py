"""OpenTelemetry tracing through opentelemetry-api only (the application brings the SDK).

Spans follow the messaging semantic conventions: a ``send QUEUE`` producer span per job pushed,
whose context travels in the job's application properties (``traceparent``, ``tracestate``,
and ``Diagnostic-Id`` so traces join the Azure SDK's), and a ``process QUEUE`` consumer span
around ``job.process()``, parented on it. With no SDK installed (the API's default provider),
nothing is recorded and pushes are left untouched: the cost is one check per push.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import (
    NoOpTracerProvider,
    ProxyTracerProvider,
    SpanKind,
    Status,
    StatusCode,
)

from ._version import __version__

__all__ = ["TRACE_HEADERS", "active", "consumer_span", "producer_span", "traced_headers"]

#: Application properties that carry trace context (W3C, and Azure's Diagnostic-Id).
TRACE_HEADERS: Final = ("traceparent", "tracestate", "Diagnostic-Id")

_tracer = trace.get_tracer("amqp1q", __version__)


def active() -> bool:
    """True once the application installed an OpenTelemetry SDK tracer provider."""
    return not isinstance(trace.get_tracer_provider(), (ProxyTracerProvider, NoOpTracerProvider))


def _attributes(
    operation: str, queue: str, system: str, message_id: str, server: tuple[str, int] | None
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": system,
        "messaging.destination.name": queue,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.message.id": message_id,
    }
    if server is not None:
        attributes["server.address"], attributes["server.port"] = server
    return attributes


def producer_span(
    queue: str, system: str, message_id: str, server: tuple[str, int] | None, batch: int
) -> trace.Span:
    attributes = _attributes("send", queue, system, message_id, server)
    if batch > 1:
        attributes["messaging.batch.message_count"] = batch
    return _tracer.start_span(f"send {queue}", kind=SpanKind.PRODUCER, attributes=attributes)


def traced_headers(span: trace.Span) -> dict[str, str]:
    """The application properties that carry ``span``'s context to the consumer."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    if "traceparent" in carrier:
        carrier["Diagnostic-Id"] = carrier["traceparent"]
    return carrier


def consumer_span(
    queue: str,
    system: str,
    message_id: str,
    headers: Mapping[str, str],
    server: tuple[str, int] | None,
) -> tuple[trace.Span, object]:
    """Start ``process QUEUE`` as the current span; returns it and the token to detach."""
    carrier = {key: headers[key] for key in TRACE_HEADERS if key in headers}
    if "traceparent" not in carrier and "Diagnostic-Id" in carrier:
        carrier["traceparent"] = carrier["Diagnostic-Id"]
    parent = propagate.extract(carrier) if carrier else None
    span = _tracer.start_span(
        f"process {queue}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=_attributes("process", queue, system, message_id, server),
    )
    token = otel_context.attach(trace.set_span_in_context(span))
    return span, token


def end_span(span: trace.Span, error: BaseException | None, token: object | None = None) -> None:
    if token is not None:
        otel_context.detach(token)  # type: ignore[arg-type]
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.end()
