"""OpenTelemetry tracing through opentelemetry-api only (the application brings the SDK).

Spans follow the messaging semantic conventions: a ``send QUEUE`` producer span per job pushed,
whose context travels in the job's application properties (``traceparent``, ``tracestate``,
and ``Diagnostic-Id`` so traces join the Azure SDK's), and a ``process QUEUE`` consumer span
around ``job.process()``, parented on that creation context and linked to it (the conventions
require the link; the parent is allowed for one message at a time). A message from the
azure-servicebus SDK carries its ``ServiceBus.message`` span there; an older Azure client's
``Diagnostic-Id`` in the Request-Id form ``|TRACEID.SPANID.`` is read too. With no SDK
installed (the API's default provider), nothing is recorded and pushes are left untouched: the
cost is one check per push, under 0.1 µs (the provider is looked up at most once a second
until one is set, then never again: OpenTelemetry lets a provider be set once).

A job whose trace its sender did not sample costs the SDK a span that records nothing (near
10 µs to make). Where the SDK's own ``ParentBased`` sampler would drop it anyway (its
description, read once per provider and sampler, says so), amqp1q makes that span itself: the
same non-recording span, with the same trace id, flags and trace state and a new span id from the
provider's id generator (:func:`_unsampled`). Any other sampler goes through the SDK.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace import (
    Link,
    NoOpTracerProvider,
    ProxyTracerProvider,
    SpanKind,
    Status,
    StatusCode,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ._errors import Amqp1qError
from ._otel import ProviderWatch, messaging_attributes
from ._version import __version__

__all__ = [
    "active",
    "consumer_span",
    "producer_span",
    "traced_headers",
]

_tracer = trace.get_tracer("amqp1q", __version__)

#: ``Diagnostic-Id`` as Application Insights' Request-Id (``|TRACEID.SPANID.``, W3C ids inside).
_REQUEST_ID: Final = re.compile(r"\|([0-9a-f]{32})\.([0-9a-f]{16})\.", re.ASCII)

#: A canonical W3C ``traceparent`` (version 00, nothing around it): the fast path's only form.
_TRACEPARENT: Final = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})", re.ASCII)

#: The properties handed to the propagator on the general path.
_EXTRACTED: Final = ("traceparent", "tracestate", "baggage")


_provider = ProviderWatch(trace.get_tracer_provider, (ProxyTracerProvider, NoOpTracerProvider))


def _found_provider() -> object:
    """The SDK's provider :func:`active` found (set once: OpenTelemetry lets it be set once)."""
    return _provider.provider


#: The tracer provider whose sampler the short cut reads (a seam for tests).
_get_provider: Callable[[], object] = _found_provider


def active() -> bool:
    """True once the application installed an OpenTelemetry SDK tracer provider (looked for at
    most once a second until then)."""
    return _provider.active()


#: Per (operation, queue, system, server): the span's name and the attributes every span of
#: that queue carries, built once (a job's own are added to a copy).
_named: dict[tuple[str, str, str, tuple[str, int] | None], tuple[str, dict[str, Any]]] = {}

#: How many queues' names and attributes are kept (then the table starts over).
_NAMED_KEPT: Final = 256


def _named_attributes(
    operation: str, queue: str, system: str, message_id: str | None, server: tuple[str, int] | None
) -> tuple[str, dict[str, Any]]:
    """The span's name (``OPERATION QUEUE``) and a fresh dict of its attributes."""
    key = (operation, queue, system, server)
    found = _named.get(key)
    if found is None:
        if len(_named) >= _NAMED_KEPT:
            _named.clear()
        attributes = messaging_attributes(system, queue, server)
        attributes["messaging.operation.type"] = attributes["messaging.operation.name"] = operation
        found = _named[key] = (f"{operation} {queue}", attributes)
    attributes = found[1].copy()
    if message_id is not None:
        attributes["messaging.message.id"] = message_id
    return found[0], attributes


def producer_span(
    queue: str, system: str, message_id: str | None, server: tuple[str, int] | None, batch: int
) -> trace.Span:
    """``send QUEUE`` for one push: one job (with its id) or a batch of ``batch`` jobs."""
    parent = trace.get_current_span().get_span_context()
    if parent.is_valid and not parent.trace_flags.sampled:
        unsampled = _unsampled(parent)
        if unsampled is not None:
            return unsampled
    name, attributes = _named_attributes("send", queue, system, message_id, server)
    if batch > 1:
        attributes["messaging.batch.message_count"] = batch
    return _tracer.start_span(name, kind=SpanKind.PRODUCER, attributes=attributes)


def traced_headers(span: trace.Span, *, diagnostic_id: bool = False) -> dict[str, str]:
    """The application properties that carry ``span``'s context to the consumer; with
    ``diagnostic_id`` (Service Bus) also ``Diagnostic-Id``, which older Azure SDKs read."""
    carrier: dict[str, str] = {}
    if _default_propagators() and not baggage.get_all():
        # What the default propagators write, without their generic machinery: the W3C trace
        # context (no baggage is current to add).
        span_context = span.get_span_context()
        if span_context.is_valid:
            carrier["traceparent"] = (
                f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}"
                f"-{span_context.trace_flags:02x}"
            )
            if span_context.trace_state:
                carrier["tracestate"] = span_context.trace_state.to_header()
    else:
        propagate.inject(carrier, context=trace.set_span_in_context(span))
    if diagnostic_id and "traceparent" in carrier:
        carrier["Diagnostic-Id"] = carrier["traceparent"]
    return carrier


def _creation(
    headers: Mapping[str, str],
) -> tuple[otel_context.Context, trace.SpanContext] | None:
    """The context a message was created in, from its application properties, and its span
    context; ``None`` if it carries none (or none that parses)."""
    found = _creation_span(headers)
    if found is None:
        return None
    context, span_context = found
    return (_remote_context(span_context) if context is None else context), span_context


def _creation_span(
    headers: Mapping[str, str],
) -> tuple[otel_context.Context | None, trace.SpanContext] | None:
    """:func:`_creation`, leaving the context ``None`` where it holds only the span context (the
    W3C fast path: :func:`_remote_context` makes it when needed)."""
    traceparent = headers.get("traceparent")
    if traceparent is not None:
        fast = _w3c_fast(traceparent, headers)
        if fast is not None:
            return None, fast
    carrier = {key: headers[key] for key in _EXTRACTED if key in headers}
    if traceparent is None:
        diagnostic = headers.get("Diagnostic-Id")
        if not diagnostic:
            return None
        request_id = _REQUEST_ID.match(diagnostic.strip().lower())
        # A Request-Id carries no sampling flag: take it as sampled (its sender recorded it).
        carrier["traceparent"] = (
            f"00-{request_id[1]}-{request_id[2]}-01" if request_id else diagnostic
        )
    context = propagate.extract(carrier)
    span_context = trace.get_current_span(context).get_span_context()
    return (context, span_context) if span_context.is_valid else None


def _remote_context(span_context: trace.SpanContext) -> otel_context.Context:
    """What the default propagators extract for ``span_context`` alone: a context holding it."""
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context), otel_context.Context())


def _w3c_fast(traceparent: str, headers: Mapping[str, str]) -> trace.SpanContext | None:
    """The span context the default propagators (W3C trace context and baggage) extract from a
    canonical version-00 ``traceparent`` with no ``tracestate`` or ``baggage`` beside it,
    without their generic machinery (a third of a traced consume's own cost); ``None`` for
    anything else, which goes the general way: another propagator, another form, or an invalid
    value."""
    if not _default_propagators() or "tracestate" in headers or "baggage" in headers:
        return None
    match = _TRACEPARENT.fullmatch(traceparent)
    if match is None:
        return None
    trace_id, span_id = int(match[1], 16), int(match[2], 16)
    if not (trace_id and span_id):
        return None
    return trace.SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(int(match[3], 16))
    )


#: The trace flag a span inherits from its parent whatever the sampler decides (W3C level 2's
#: random trace id; absent from older APIs, which then inherit none).
_INHERITED_FLAGS: Final[int] = getattr(trace.TraceFlags, "RANDOM_TRACE_ID", 0)

#: A ``ParentBased`` sampler's description (the SDK's own class): which sampler it gives each
#: kind of parent. Delegates whose descriptions hold a comma or brace do not match (no short cut).
_PARENT_BASED: Final = re.compile(
    r"ParentBased\{root:.*,remoteParentSampled:[^,{}]*,remoteParentNotSampled:([^,{}]*)"
    r",localParentSampled:[^,{}]*,localParentNotSampled:([^,{}]*)\}",
    re.ASCII | re.DOTALL,
)


class _Shortcut:
    """What the provider's sampler does with an unsampled parent, learnt once per provider and
    sampler: whether it drops a remote one and a local one, and where new span ids come from."""

    __slots__ = ("drop_local", "drop_remote", "new_span_id", "provider", "sampler")

    def __init__(self, provider: object, sampler: object) -> None:
        self.provider, self.sampler = provider, sampler
        self.drop_remote = self.drop_local = False
        self.new_span_id: Callable[[], int] | None = None
        kind = type(sampler)
        if (kind.__module__, kind.__qualname__) != (
            "opentelemetry.sdk.trace.sampling",
            "ParentBased",
        ):
            return  # another sampler (a subclass too) decides its own way: the SDK asks it
        id_generator = getattr(provider, "id_generator", None)
        new_span_id = getattr(id_generator, "generate_span_id", None)
        get_tracer = getattr(provider, "get_tracer", None)
        if new_span_id is None or get_tracer is None:
            return
        if isinstance(get_tracer("amqp1q", __version__), trace.NoOpTracer):
            return  # the SDK is disabled (OTEL_SDK_DISABLED): it makes no span at all
        match = _PARENT_BASED.fullmatch(str(sampler.get_description()))  # type: ignore[attr-defined]
        if match is not None:
            self.drop_remote = match[1] == "AlwaysOffSampler"
            self.drop_local = match[2] == "AlwaysOffSampler"
            self.new_span_id = new_span_id


_shortcut = _Shortcut(None, None)


def _unsampled(parent: trace.SpanContext) -> trace.Span | None:
    """For a valid, unsampled ``parent``: the span the SDK would make under it, if its sampler is
    the SDK's ``ParentBased`` and drops such a parent (its ``AlwaysOff``, the default) — a
    non-recording span in the parent's trace, with its trace state, unsampled, and a span id of
    its own. ``None`` otherwise: the SDK must decide."""
    global _shortcut
    provider = _get_provider()
    sampler = getattr(provider, "sampler", None)
    shortcut = _shortcut
    if provider is not shortcut.provider or sampler is not shortcut.sampler:
        shortcut = _shortcut = _Shortcut(provider, sampler)
    new_span_id = shortcut.new_span_id
    if new_span_id is None or not (
        shortcut.drop_remote if parent.is_remote else shortcut.drop_local
    ):
        return None
    return trace.NonRecordingSpan(
        trace.SpanContext(
            parent.trace_id,
            new_span_id(),
            is_remote=False,
            trace_flags=trace.TraceFlags(parent.trace_flags & _INHERITED_FLAGS),
            trace_state=parent.trace_state,
        )
    )


_seen_textmap: object = None
_seen_default = False


def _default_propagators() -> bool:
    """True while the global propagator is OpenTelemetry's default (``OTEL_PROPAGATORS`` unset
    or ``tracecontext,baggage``); looked at again only when the global one is replaced."""
    global _seen_textmap, _seen_default
    textmap = propagate.get_global_textmap()
    if textmap is not _seen_textmap:
        inner = (
            getattr(textmap, "_propagators", None) if type(textmap) is CompositePropagator else None
        )
        kinds = [type(p) for p in inner] if isinstance(inner, (list, tuple)) else None
        _seen_default = kinds in (
            [TraceContextTextMapPropagator, W3CBaggagePropagator],
            [TraceContextTextMapPropagator],
        )
        _seen_textmap = textmap
    return _seen_default


def consumer_span(
    queue: str,
    system: str,
    message_id: str,
    headers: Mapping[str, str],
    server: tuple[str, int] | None,
) -> tuple[trace.Span, object]:
    """Start ``process QUEUE`` as the current span; returns it and the token to detach.

    Parented on, and linked to, the message's creation context; with none, a child of whatever
    span is current. The message's baggage, if it carries any, is current in the block too."""
    found = _creation_span(headers)
    parent = links = current = None
    if found is not None:
        parent, creation = found
        if "baggage" in headers and parent is not None:
            current = otel_context.get_current()
            for key, value in baggage.get_all(parent).items():
                current = baggage.set_baggage(key, value, current)
        span = _unsampled(creation) if not creation.trace_flags.sampled else None
        if span is not None:
            return span, otel_context.attach(trace.set_span_in_context(span, current))
        if parent is None:
            parent = _remote_context(creation)
        links = [Link(creation)]
    name, attributes = _named_attributes("process", queue, system, message_id, server)
    span = _tracer.start_span(
        name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes, links=links
    )
    token = otel_context.attach(trace.set_span_in_context(span, current))
    return span, token


def end_push_span(span: trace.Span, failed: list[Amqp1qError], count: int) -> None:
    """End a push's span: an error if any of its ``count`` jobs failed (the first recorded)."""
    if failed:
        first = failed[0]
        span.record_exception(first)
        what = f"{type(first).__name__}: {first}"
        if count > 1:
            what = f"{len(failed)} of {count} jobs failed; the first: {what}"
        span.set_status(Status(StatusCode.ERROR, what))
    span.end()


def end_span(span: trace.Span, error: BaseException | None, token: object | None = None) -> None:
    if token is not None:
        otel_context.detach(token)  # type: ignore[arg-type]
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.end()
