"""The unsampled short cut: where the SDK's ``ParentBased`` sampler drops a job's unsampled
parent, amqp1q makes the non-recording span itself. Every case is checked against what the SDK
makes for the same parent (its ids made deterministic), and every other sampler must be left to
the SDK."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)

from amqp1q import _tracing
from amqp1q._otel import ProviderWatch


class Counting(IdGenerator):
    """Span ids 1, 2, 3… (trace ids too): two providers made alike give the same ids."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    def generate_span_id(self) -> int:
        return next(self._ids)

    def generate_trace_id(self) -> int:
        return next(self._ids)


class Custom(Sampler):
    """A sampler of the application's own that drops whatever it is asked about."""

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.DROP)

    def get_description(self) -> str:  # the default's, word for word: not to be trusted
        return ParentBased(ALWAYS_ON).get_description()


class RecordingParentBased(ParentBased):
    """A subclass: it may decide differently from what its description says (here it records)."""

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.RECORD_AND_SAMPLE)


#: Sampler, and whether the short cut is taken for an unsampled (remote, local) parent.
SAMPLERS: dict[str, tuple[Sampler, bool, bool]] = {
    "default": (ParentBased(ALWAYS_ON), True, True),
    "ratio": (ParentBased(TraceIdRatioBased(0.1)), True, True),
    "always-off": (ParentBased(ALWAYS_OFF), True, True),
    "remote-kept": (ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON), False, True),
    "local-kept": (ParentBased(ALWAYS_ON, local_parent_not_sampled=ALWAYS_ON), True, False),
    # a delegate whose description does not parse: no short cut at all
    "custom-delegate": (ParentBased(ALWAYS_ON, remote_parent_not_sampled=Custom()), False, False),
    "always-on": (ALWAYS_ON, False, False),
    "ratio-root-only": (TraceIdRatioBased(0.5), False, False),
    "custom": (Custom(), False, False),
    "subclass": (RecordingParentBased(ALWAYS_ON), False, False),
}


def _provider(sampler: Sampler) -> TracerProvider:
    provider = TracerProvider(sampler=sampler, id_generator=Counting(), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    return provider


@pytest.fixture
def use(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make ``provider`` the one amqp1q traces with (the global one is left alone)."""

    def use(provider: TracerProvider) -> None:
        monkeypatch.setattr(_tracing, "_tracer", provider.get_tracer("amqp1q"))
        monkeypatch.setattr(_tracing, "_get_provider", lambda: provider)
        monkeypatch.setattr(_tracing, "active", lambda: True)

    return use


def _sdk_child(provider: TracerProvider, parent: trace.SpanContext) -> trace.Span:
    context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
    return provider.get_tracer("amqp1q").start_span("process q", context=context)


_PARENTS = st.builds(
    trace.SpanContext,
    trace_id=st.integers(1, 2**128 - 1),
    span_id=st.integers(1, 2**64 - 1),
    is_remote=st.booleans(),
    trace_flags=st.sampled_from([0, 2]).map(trace.TraceFlags),  # unsampled, random bit or not
    trace_state=st.sampled_from(["", "vendor=x", "a=1,b=2"]).map(
        lambda header: trace.TraceState.from_header([header])
    ),
)


@settings(max_examples=300, deadline=None)
@given(parent=_PARENTS, sampler=st.sampled_from(sorted(SAMPLERS)))
def test_the_short_cut_makes_what_the_sdk_makes(parent: trace.SpanContext, sampler: str) -> None:
    """The same non-recording span (trace id, new span id, flags, trace state, local) as the
    SDK's, wherever the short cut is taken; taken exactly where the table says."""
    chosen, remote, local = SAMPLERS[sampler]
    ours, theirs = _provider(chosen), _provider(chosen)
    original = _tracing._get_provider
    _tracing._get_provider = lambda: ours
    try:
        span = _tracing._unsampled(parent)
    finally:
        _tracing._get_provider = original
    assert (span is not None) == (remote if parent.is_remote else local)
    sdk = _sdk_child(theirs, parent)
    if span is not None:
        assert not sdk.is_recording()
        assert not span.is_recording()
        assert span.get_span_context() == sdk.get_span_context()  # the span id included


def test_a_disabled_sdk_is_left_to_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_SDK_DISABLED: the SDK makes no span at all (not the short cut's)."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    provider = _provider(ParentBased(ALWAYS_ON))
    monkeypatch.setattr(_tracing, "_get_provider", lambda: provider)
    parent = trace.SpanContext(1, 2, is_remote=True, trace_flags=trace.TraceFlags(0))
    assert _tracing._unsampled(parent) is None


def test_a_new_sampler_is_read_again(use: Any) -> None:
    """The sampler's description is read once per provider and sampler: replacing either is
    noticed."""
    provider = _provider(ParentBased(ALWAYS_ON))
    use(provider)
    parent = trace.SpanContext(1, 2, is_remote=True, trace_flags=trace.TraceFlags(0))
    assert _tracing._unsampled(parent) is not None
    provider.sampler = ALWAYS_ON
    assert _tracing._unsampled(parent) is None
    use(_provider(ParentBased(TraceIdRatioBased(0.5))))
    assert _tracing._unsampled(parent) is not None
    use(_provider(Custom()))
    assert _tracing._unsampled(parent) is None


def _downstream(headers: dict[str, str], *, diagnostic_id: bool) -> tuple[bool, dict[str, str]]:
    """Consume a job with ``headers`` and, inside its process span, push one: whether the
    process span recorded, and the pushed job's trace headers."""
    span, token = _tracing.consumer_span("in", "amqp", "id-1", headers, ("h", 5672))
    recording = span.is_recording()
    try:
        send = _tracing.producer_span("out", "amqp", "id-2", ("h", 5672), 1)
        carrier = _tracing.traced_headers(send, diagnostic_id=diagnostic_id)
        _tracing.end_push_span(send, [], 1)
    finally:
        _tracing.end_span(span, None, token)
    return recording, carrier


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-02"},
        {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
            "tracestate": "vendor=x",
        },
        {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
            "baggage": "tenant=a",
        },
        {"Diagnostic-Id": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    ],
    ids=["unsampled", "random-bit", "tracestate", "baggage", "diagnostic-id", "sampled"],
)
@pytest.mark.parametrize("diagnostic_id", [False, True], ids=["amqp", "servicebus"])
def test_the_pushed_job_carries_what_the_sdk_would_give_it(
    use: Any, monkeypatch: pytest.MonkeyPatch, headers: dict[str, str], diagnostic_id: bool
) -> None:
    """A job consumed and pushed on goes out with the same trace headers (the trace's id, a
    span id, sampled flag 0) whether the short cut or the SDK made the spans on the way."""
    use(_provider(ParentBased(ALWAYS_ON)))
    short = _downstream(headers, diagnostic_id=diagnostic_id)
    use(_provider(ParentBased(ALWAYS_ON)))
    monkeypatch.setattr(_tracing, "_unsampled", lambda parent: None)
    sdk = _downstream(headers, diagnostic_id=diagnostic_id)
    assert short == sdk
    incoming = headers.get("traceparent") or headers["Diagnostic-Id"]
    sampled = incoming.endswith("-01")
    assert short[0] is sampled
    assert short[1]["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert short[1]["traceparent"][-3:] == incoming[-3:]  # the sampled flag (and random bit)
    assert short[1].get("Diagnostic-Id", short[1]["traceparent"]) == short[1]["traceparent"]


def test_an_unsampled_current_span_makes_an_unsampled_push(use: Any) -> None:
    """A push under an unsampled span of the application's (a web request's, say) takes the
    short cut too, and the job carries the trace with sampled flag 0."""
    provider = _provider(ParentBased(TraceIdRatioBased(0.0)))
    use(provider)
    with provider.get_tracer("app").start_as_current_span("request") as request:
        assert not request.is_recording()
        send = _tracing.producer_span("out", "amqp", "id-2", None, 1)
        carrier = _tracing.traced_headers(send)
    assert not send.is_recording()
    context = send.get_span_context()
    assert context.trace_id == request.get_span_context().trace_id
    assert carrier == {"traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-00"}


def test_the_short_cut_reads_the_provider_tracing_found() -> None:
    """Outside tests, the sampler read is that of the provider :func:`_tracing.active` found
    (OpenTelemetry lets the global provider be set once), and none before it found one."""
    provider = _provider(ParentBased(ALWAYS_ON))
    found: list[object] = [trace.ProxyTracerProvider()]
    watch = ProviderWatch(lambda: found[0], (trace.ProxyTracerProvider,))
    assert not watch.active()
    assert watch.provider is None
    watch._next_check = 0.0
    found[0] = provider
    assert watch.active()
    assert watch.provider is provider
    assert _tracing._get_provider is _tracing._found_provider
