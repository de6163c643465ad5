"""The consumer side of tracing: which creation context a message's properties give, and how
the ``process`` span relates to it (parent and link), for every form of the context that
reaches amqp1q: W3C ``traceparent``, the Azure SDK's ``Diagnostic-Id`` (W3C), and the older
Request-Id form ``|TRACEID.SPANID.``."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from amqp1q import _tracing

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"
W3C = f"00-{TRACE_ID}-{SPAN_ID}-01"


@pytest.fixture
def spans(traced: tuple[TracerProvider, InMemorySpanExporter]) -> InMemorySpanExporter:
    return traced[1]


def _parent_of(headers: dict[str, str]) -> trace.SpanContext | None:
    found = _tracing._creation(headers)
    if found is None:
        return None
    context, span_context = found
    assert trace.get_current_span(context).get_span_context() == span_context
    return span_context


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
    assert _tracing._creation(headers) is None


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


def _extracted(headers: dict[str, str]) -> trace.SpanContext | None:
    """What OpenTelemetry's configured propagator makes of the same properties."""
    context = propagate.extract({k: v for k, v in headers.items() if k != "Diagnostic-Id"})
    span_context = trace.get_current_span(context).get_span_context()
    return span_context if span_context.is_valid else None


_HEX = st.text("0123456789abcdef", min_size=1, max_size=2)
_TRACEPARENTS = st.one_of(
    st.builds(
        lambda version, trace_id, span_id, flags, tail: (
            f"{version}-{trace_id}-{span_id}-{flags}" + tail
        ),
        st.sampled_from(["00", "01", "ff", "0", "0A"]),
        st.sampled_from([TRACE_ID, "0" * 32, TRACE_ID.upper(), TRACE_ID[:31], "+" + TRACE_ID[1:]]),
        st.sampled_from([SPAN_ID, "0" * 16, SPAN_ID[:15] + "_", "-" + SPAN_ID[1:]]),
        _HEX,
        st.sampled_from(["", " ", "\t", "-extra", "-"]),
    ),
    st.text(max_size=60),
)


@settings(max_examples=400, deadline=None)
@given(
    traceparent=_TRACEPARENTS,
    tracestate=st.none() | st.sampled_from(["", "vendor=x", "a=1,b=2", "bad state"]),
    baggage=st.none() | st.sampled_from(["k=v", ""]),
)
def test_the_fast_path_reads_what_the_propagator_reads(
    traceparent: str, tracestate: str | None, baggage: str | None
) -> None:
    """A canonical traceparent skips the propagator's generic machinery: for every form, valid
    or not, the span context is the one the default propagators extract."""
    headers = {"traceparent": traceparent}
    if tracestate is not None:
        headers["tracestate"] = tracestate
    if baggage is not None:
        headers["baggage"] = baggage
    assert _parent_of(headers) == _extracted(headers)


def test_the_messages_baggage_is_current_while_it_is_processed(
    spans: InMemorySpanExporter,
) -> None:
    headers = {"traceparent": W3C, "baggage": "tenant=a,region=eu"}
    token = otel_context.attach(baggage.set_baggage("worker", "w1"))
    try:
        span, inner = _tracing.consumer_span("q", "amqp", "id-1", headers, None)
        assert baggage.get_all() == {"worker": "w1", "tenant": "a", "region": "eu"}
        _tracing.end_span(span, None, inner)
        assert baggage.get_all() == {"worker": "w1"}
    finally:
        otel_context.detach(token)
    [process] = spans.get_finished_spans()
    assert process.parent is not None
    assert process.parent.span_id == int(SPAN_ID, 16)


def test_another_propagator_is_asked_instead_of_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With OTEL_PROPAGATORS set to something else (here: a propagator that reads its own
    property), the W3C fast path steps aside and the configured propagator decides."""

    class Custom(TraceContextTextMapPropagator):
        def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
            return super().extract({"traceparent": f"00-{'1' * 32}-{'2' * 16}-01"}, context)

    monkeypatch.setattr(propagate, "_HTTP_TEXT_FORMAT", Custom())
    parent = _parent_of({"traceparent": W3C})
    assert parent is not None
    assert (parent.trace_id, parent.span_id) == (int("1" * 32, 16), int("2" * 16, 16))


def test_a_canonical_traceparent_takes_the_fast_path() -> None:
    """The property test above compares results; this one checks the fast path is taken at
    all under the default propagators, and stepped around where the propagator must decide."""
    assert _tracing._w3c_fast(W3C, {"traceparent": W3C}) is not None
    assert _tracing._w3c_fast(W3C, {"traceparent": W3C, "tracestate": "a=1"}) is None
    assert _tracing._w3c_fast(" " + W3C, {"traceparent": " " + W3C}) is None
