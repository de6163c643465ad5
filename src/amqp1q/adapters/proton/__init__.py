"""The Proton adapter: python-qpid-proton's sans-IO AMQP 1.0 engine, driven from asyncio.

Modules, each with one job:

- ``_types``: the AMQP 1.0 type system, encoded and decoded (no proton);
- ``_codec``: Job <-> AMQP message bytes, the hot path;
- ``_engine``: proton's Connection/Transport/Collector as a sans-IO state machine (no asyncio);
- ``_driver``: the only I/O — a socket through the event loop, TLS, heartbeats;
- ``_brokers``: broker detection and per-broker address forms and capabilities;
- ``adapter``: the :class:`~amqp1q.Adapter` implementation.
"""

from .adapter import ProtonAdapter

__all__ = ["ProtonAdapter"]
