"""From a parsed URL and options to an adapter: the only place that knows every backend."""

from __future__ import annotations

import attrs

from ._adapter import Adapter
from ._errors import InvalidSetting, UnsupportedFeature
from ._policy import ReconnectPolicy
from ._settings import TLSConfig
from ._urls import AmqpEndpoint, Endpoint, MemoryEndpoint, ServiceBusEndpoint

__all__ = ["AdapterOptions", "make_adapter"]


@attrs.frozen
class AdapterOptions:
    """Backend settings from ``JobQueue.from_url``'s keyword arguments."""

    queue: str | None = None
    address: str | None = None
    container_id: str | None = None
    tls: TLSConfig | None = None
    exchange: str | None = None
    routing_key: str | None = None
    broker: str | None = None
    #: The broker's virtual host (``vhost=``, or ``?vhost=`` in the URL).
    vhost: str | None = None
    connect_timeout: float = 10.0
    max_message_size: int | None = None
    #: How jobs are written: ``"amqp1q"`` (DESIGN section 3) or ``"roadrunner"`` (the
    #: RoadRunner amqp1 driver's JSON envelope). Both are read whatever this says.
    wire_format: str = "amqp1q"
    #: The pipeline the RoadRunner envelope names (``rr_pipeline``); None: the queue's name.
    pipeline: str | None = None
    #: Send a SASL PLAIN password over plaintext to a host that is not loopback.
    allow_plaintext_password: bool = False
    #: Service Bus has no priority: push prioritised jobs anyway, dropping it.
    ignore_priority: bool = False
    #: None: a lost connection is not re-dialled (the queue fails with ConnectionLost).
    reconnect: ReconnectPolicy | None = attrs.field(factory=ReconnectPolicy)

    def given(self) -> list[str]:
        """Names of the network options set (those that mean nothing to ``memory://``)."""
        names = ("container_id", "tls", "exchange", "routing_key", "broker", "vhost")
        return [name for name in names if getattr(self, name) is not None]


def queue_name(endpoint: Endpoint, options: AdapterOptions) -> str:
    """The logical queue: ``queue=``, else ``address=``, else the URL's path or EntityPath."""
    for candidate in (options.queue, options.address, endpoint.queue):
        if candidate:
            return candidate
    raise InvalidSetting(
        f"no queue given for {endpoint.display!r}: pass queue=... or put it in the URL path "
        "(amqp://host/QUEUE, memory://QUEUE) or the connection string (EntityPath=QUEUE)"
    )


def make_adapter(endpoint: Endpoint, options: AdapterOptions) -> Adapter:
    name = queue_name(endpoint, options)
    if isinstance(endpoint, MemoryEndpoint):
        from .adapters.memory import MemoryAdapter, MemoryBroker

        unused = options.given()
        if unused:
            raise UnsupportedFeature(
                f"memory:// queues take no network settings; remove {', '.join(unused)}",
                queue=name,
            )
        display = endpoint.display if endpoint.queue == name else f"{endpoint.display}{name}"
        return MemoryAdapter(
            MemoryBroker.namespace(endpoint.namespace),
            name,
            max_message_size=options.max_message_size,
            display=display,
        )
    if isinstance(endpoint, AmqpEndpoint):
        return _proton_adapter(endpoint, options, name)
    if isinstance(endpoint, ServiceBusEndpoint):
        return _servicebus_adapter(endpoint, options, name)
    raise AssertionError(f"unhandled endpoint {endpoint!r}")  # pragma: no cover


def _proton_adapter(endpoint: AmqpEndpoint, options: AdapterOptions, name: str) -> Adapter:
    from .adapters.proton.adapter import ProtonAdapter

    return ProtonAdapter(endpoint, options, name)


def _servicebus_adapter(
    endpoint: ServiceBusEndpoint, options: AdapterOptions, name: str
) -> Adapter:
    unused = [
        option
        for option in ("tls", "exchange", "routing_key", "broker", "vhost")
        if getattr(options, option) is not None
    ]
    if unused:
        raise UnsupportedFeature(
            f"{endpoint.display}: Service Bus takes no {', '.join(unused)} "
            "(TLS is always on outside the emulator; queues are entities, not exchanges; "
            "a namespace has no virtual hosts)",
            queue=name,
        )
    from .adapters.servicebus import ServiceBusAdapter

    return ServiceBusAdapter(
        endpoint,
        name,
        ignore_priority=options.ignore_priority,
        wire_format=options.wire_format,
        pipeline=options.pipeline,
        reconnect=options.reconnect,
        connect_timeout=options.connect_timeout,
    )
