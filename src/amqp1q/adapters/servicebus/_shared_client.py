"""One ``ServiceBusClient`` that many queues, topics and subscriptions share: :class:`SharedClient`.

``amqp1q.connect("Endpoint=sb://...")`` opens one (the :class:`~amqp1q._adapter.Backend` of the
Service Bus adapter); each ``client.queue()``, ``client.topic()`` and ``client.subscription()``
is a :class:`~.adapter.ServiceBusAdapter` on it, and a ``from_url`` queue's dead-letter queue
shares its queue's. It holds the SDK client (credentials, retry settings) and the leases: the
first lease makes the client, the last closes it.

azure-servicebus 7.x opens an AMQP connection of its own for each sender and receiver (its
connection sharing is switched off inside the SDK); :attr:`SharedClient.connections` counts
those, and docs/connections.md says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..._adapter import Entity
from ..._errors import InvalidURL, QueueStateError
from ..._options import AdapterOptions
from ..._policy import ReconnectPolicy
from ..._urls import ServiceBusEndpoint
from .._leases import Leases
from ._sdk import CLOSE_TIMEOUT, ServiceBusClient, make_client

if TYPE_CHECKING:
    from ._replies import ServiceBusReplyLink
    from .adapter import ServiceBusAdapter

__all__ = ["SharedClient", "client_settings"]

log = logging.getLogger("amqp1q.servicebus")


def client_settings(
    reconnect: ReconnectPolicy | None,
    *,
    retry_total: int | None = None,
    retry_backoff_factor: float = 0.8,
    retry_backoff_max: float = 30.0,
    client_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``ServiceBusClient`` keywords: the SDK's own retries are off with a reconnect policy
    (amqp1q re-dials itself; the SDK's retries only slow it down)."""
    if retry_total is None:
        retry_total = 0 if reconnect is not None else 3
    return {
        "retry_total": retry_total,
        "retry_backoff_factor": retry_backoff_factor,
        "retry_backoff_max": retry_backoff_max,
        **(client_options or {}),
    }


class SharedClient(Leases["ServiceBusAdapter"]):
    """One SDK client for the adapters that lease it."""

    def __init__(
        self,
        endpoint: ServiceBusEndpoint | None,
        options: AdapterOptions | None = None,
        *,
        credential: Any = None,
        namespace: str | None = None,
        emulator: bool = False,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.options = options if options is not None else AdapterOptions()
        self._credential = credential
        self._namespace = namespace
        self.emulator = emulator or (endpoint is not None and endpoint.emulator)
        self._settings = dict(settings or client_settings(self.options.reconnect))
        self._client: ServiceBusClient | None = None
        super().__init__()
        self._replies: ServiceBusReplyLink | None = None

    # -- facts ----------------------------------------------------------------------------------

    @property
    def display(self) -> str:
        if self.endpoint is not None:
            return self.endpoint.display
        return f"sb://{self._namespace}/"

    @property
    def namespace(self) -> str | None:
        return self._namespace

    @property
    def client(self) -> ServiceBusClient:
        if self._client is None:
            raise QueueStateError(f"the client of {self.display} is not open")
        return self._client

    @property
    def state(self) -> str:
        """``connected`` (``reconnecting`` while any member re-dials, ``failed`` once one gave
        up), or ``unopened`` / ``closed``."""
        if self._client is None:
            return "closed" if self._ended else "unopened"
        states = {member.state for member in self._members}
        for state in ("failed", "reconnecting"):
            if state in states:
                return state
        return "connected"

    @property
    def connections(self) -> int:
        """The SDK's connections open now: one per sender and receiver."""
        return sum(member.connections for member in self._members)

    @property
    def current_reply_link(self) -> ServiceBusReplyLink | None:
        """The reply link, if one was made (it may be closed)."""
        return self._replies

    def reply_link(self, adapter: ServiceBusAdapter) -> ServiceBusReplyLink:
        """The client's reply link (a new one once the last closed; see ``_replies``)."""
        from ._replies import ServiceBusReplyLink

        link = self._replies
        if link is None or link.closed:
            link = self._replies = ServiceBusReplyLink(adapter, adapter.reply_queue)
        return link

    # -- leases ---------------------------------------------------------------------------------

    async def acquire(self) -> None:
        """Take a lease, making the SDK client if there is none."""
        self._lease()

    def lease_now(self) -> None:
        """Take a lease on the open client (a client's adapter)."""
        if self._client is None:
            raise QueueStateError(
                f"the client of {self.display} is not open (use `async with client:`)"
            )
        self._lease()

    def _lease(self) -> None:
        if self._ended:
            raise QueueStateError(f"the client of {self.display} is closed")
        if self._client is None:
            self._client = self.make_client()
        self._leases += 1

    def make_client(self) -> ServiceBusClient:
        """A new SDK client with these settings (InvalidURL for what the SDK refuses)."""
        try:
            return make_client(
                self.endpoint,
                credential=self._credential,
                namespace=self._namespace,
                emulator=self.emulator,
                options=self._settings,
            )
        except ValueError as exc:  # what the SDK refuses that parse_url let through
            raise InvalidURL(
                f"azure-servicebus refused the connection string {self.display}: {exc}"
            ) from None

    # -- the Backend a client opens (open, close: see Leases) -------------------------------------

    def adapter(self, entity: Entity, options: AdapterOptions) -> ServiceBusAdapter:
        """An adapter for ``entity`` on this (open) client, open already."""
        from .adapter import ServiceBusAdapter

        adapter = ServiceBusAdapter(
            self.endpoint,
            entity.name,
            shared=self,
            node=entity,
            ignore_priority=options.ignore_priority,
            wire_format=options.wire_format,
            pipeline=options.pipeline,
            reconnect=options.reconnect,
            connect_timeout=options.connect_timeout,
            reply_queue=options.reply_queue,
        )
        adapter.bind()
        return adapter

    async def _disconnect(self) -> None:
        link, self._replies = self._replies, None
        if link is not None:
            await link.close()
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.close(), CLOSE_TIMEOUT)
            except (Exception, asyncio.TimeoutError):
                log.debug("closing the Service Bus client failed", exc_info=True)
