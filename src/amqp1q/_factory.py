"""From a parsed URL and options to an adapter (``from_url``) or a backend (``connect``): the
only place that knows every backend.

(``AdapterOptions`` lives in ``_options``, below the adapters; it is importable from here too.)
"""

from __future__ import annotations

from ._adapter import Adapter, Backend
from ._errors import InvalidSetting, UnsupportedFeature
from ._options import AdapterOptions
from ._urls import AmqpEndpoint, Endpoint, MemoryEndpoint, ServiceBusEndpoint

__all__ = ["AdapterOptions", "make_adapter", "make_backend"]


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


def _check_servicebus(
    endpoint: ServiceBusEndpoint, options: AdapterOptions, name: str | None
) -> None:
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


def _servicebus_adapter(
    endpoint: ServiceBusEndpoint, options: AdapterOptions, name: str
) -> Adapter:
    _check_servicebus(endpoint, options, name)
    from .adapters.servicebus import ServiceBusAdapter

    return ServiceBusAdapter(
        endpoint,
        name,
        ignore_priority=options.ignore_priority,
        wire_format=options.wire_format,
        pipeline=options.pipeline,
        reconnect=options.reconnect,
        connect_timeout=options.connect_timeout,
        reply_queue=options.reply_queue,
    )


def make_backend(endpoint: Endpoint, options: AdapterOptions) -> Backend:
    """The connection a client shares among its queues (not open yet)."""
    if isinstance(endpoint, MemoryEndpoint):
        from .adapters._memory_backend import MemoryBackend
        from .adapters.memory import MemoryBroker

        unused = options.given()
        if unused:
            raise UnsupportedFeature(
                f"memory:// takes no network settings; remove {', '.join(unused)}"
            )
        display = (
            "memory://" if endpoint.namespace == "default" else f"memory://{endpoint.namespace}/"
        )
        return MemoryBackend(MemoryBroker.namespace(endpoint.namespace), display)
    if isinstance(endpoint, AmqpEndpoint):
        from .adapters.proton._shared_connection import SharedConnection

        return SharedConnection(endpoint, options)
    if isinstance(endpoint, ServiceBusEndpoint):
        _check_servicebus(endpoint, options, None)
        from .adapters.servicebus._shared_client import SharedClient

        return SharedClient(endpoint, options)
    raise AssertionError(f"unhandled endpoint {endpoint!r}")  # pragma: no cover
