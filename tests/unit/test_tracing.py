"""The consumer side of tracing: which creation context a message's properties give, and how
the ``process`` span relates to it (parent and link), for every form of the context that
reaches amqp1q: W3C ``traceparent``, the Azure SDK's ``Diagnostic-Id`` (W3C), and the older
Request-Id form ``|TRACEID.SPANID.``."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from amqp1q import _tracing

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"
W3C = f"00-{TRACE_ID}-{SPAN_ID}-01"


@pytest.fixture
def spans(traced: tuple[TracerProvider, InMemorySpanExporter]) -> InMemorySpanExporter:
    return traced[1]


def _parent_of(headers: dict[str, str]) -> trace.SpanContext | None:
    context = _tracing.creation_context(headers)
    return None if context is None else trace.get_current_span(context).get_span_context()


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": W3C},
        {"Diagnostic-Id": W3C},
        {"Diagnostic-Id": f"|{TRACE_ID}.{SPAN_ID}."},
        {"Diagnostic-Id": f"|{TRACE_ID.upper()}.{SPAN_ID}.1a2b3c_"},  # a child Request-Id
        {
            "traceparent": W3C,
            "Diagnostic-Id": "|00000000000000000000000000000001.0000000000000001.",
        },
    ],
    ids=["traceparent", "diagnostic-id", "request-id", "request-id-child", "traceparent-first"],
)
def test_the_creation_context_comes_from_any_form(headers: dict[str, str]) -> None:
    parent = _parent_of(headers)
    assert parent is not None
    assert parent.is_remote
    assert (f"{parent.trace_id:032x}", f"{parent.span_id:016x}") == (TRACE_ID, SPAN_ID)
    assert parent.trace_flags.sampled


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"tenant": "a"},
        {"traceparent": "00-1-2-01"},
        {"Diagnostic-Id": "|a000b421-5d183ab6.1."},  # a hierarchical id: no W3C ids inside
        {"Diagnostic-Id": ""},
    ],
)
def test_no_or_unreadable_context_gives_none(headers: dict[str, str]) -> None:
    assert _tracing.creation_context(headers) is None


def test_tracestate_travels_with_traceparent() -> None:
    parent = _parent_of({"traceparent": W3C, "tracestate": "az=1,vendor=x"})
    assert parent is not None
    assert parent.trace_state.get("vendor") == "x"


def test_the_process_span_is_parented_on_and_linked_to_the_creation_context(
    spans: InMemorySpanExporter,
) -> None:
    span, token = _tracing.consumer_span("q", "amqp", "id-1", {"Diagnostic-Id": W3C}, None)
    _tracing.end_span(span, None, token)
    [process] = spans.get_finished_spans()
    assert process.parent is not None
    assert (process.context.trace_id, process.parent.span_id) == (
        int(TRACE_ID, 16),
        int(SPAN_ID, 16),
    )
    [link] = process.links
    assert (link.context.trace_id, link.context.span_id) == (int(TRACE_ID, 16), int(SPAN_ID, 16))


def test_without_a_context_the_process_span_is_a_child_of_the_current_span(
    spans: InMemorySpanExporter,
) -> None:
    with trace.get_tracer("t", tracer_provider=TracerProvider()).start_as_current_span("outer"):
        outer = trace.get_current_span().get_span_context()
        span, token = _tracing.consumer_span("q", "amqp", "id-1", {"traceparent": "junk"}, None)
        _tracing.end_span(span, None, token)
    [process] = spans.get_finished_spans()
    assert process.parent is not None
    assert process.parent.span_id == outer.span_id
    assert process.links == ()
