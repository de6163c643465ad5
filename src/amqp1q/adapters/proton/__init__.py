"""The Proton adapter: python-qpid-proton's sans-IO AMQP 1.0 engine, driven from asyncio.

Modules, each with one job (the lower in the list, the nearer the wire):

- ``adapter``: the :class:`~amqp1q.Adapter` implementation: one queue, topic or subscription
  on a connection: its facts, binding, open and close;
- ``_shared_connection``: the connection many adapters share (``amqp1q.connect``'s backend):
  dialling, the broker's profile, leases; ``_supervisor``: that connection kept up:
  re-dialling, re-attaching every adapter's consumers, its state;
- ``_publishing``: pushes and re-published copies over sender links (``_sending``: one link;
  ``_routing``: ``Job(to=...)`` through the anonymous relay);
- ``_receiving``: one consumer's receiver link; ``_settling``: outcomes as the broker allows;
  ``_holding``: jobs held until a time; ``_incoming``: a delivery decoded for the facade;
- ``_brokers``: broker detection and per-broker address forms and capabilities; ``_vhosts``:
  virtual hosts and what a missing queue's error says to run;
- ``_client``: a client connection with awaitable open and attach, errors typed;
- ``_engine`` and ``_links``: proton's Connection/Transport/Collector as a sans-IO state machine
  (no asyncio); ``_dispatch``: its events routed to links and the handler; ``_frames``: frame
  logging;
- ``_driver``: the only I/O — a socket through the event loop, TLS, heartbeats;
- ``_codec``: Job <-> AMQP message bytes, the hot path; ``_types``: the AMQP 1.0 type system,
  encoded and decoded (no proton).

The application properties a job carries are read and written by :mod:`amqp1q._properties`,
shared with the Service Bus adapter.
"""

from .adapter import ProtonAdapter

__all__ = ["ProtonAdapter"]
