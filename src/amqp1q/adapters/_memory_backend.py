"""The in-memory :class:`~amqp1q._adapter.Backend`: what ``amqp1q.connect("memory://")`` holds.

There is no connection: the client's queues, topics and subscriptions are adapters on one
:class:`~amqp1q.adapters.memory.MemoryBroker` namespace (``memory://`` the default one,
``memory://NAMESPACE`` its own).
"""

from __future__ import annotations

from .._adapter import QUEUE, Entity
from .._errors import QueueStateError, UnsupportedFeature
from .._options import AdapterOptions
from .memory import MemoryAdapter, MemoryBroker, MemoryReplies

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """The adapters of one client on one memory namespace."""

    def __init__(self, broker: MemoryBroker, display: str) -> None:
        self.broker = broker
        self._display = display
        self._state = "unopened"
        self._adapters: list[MemoryAdapter] = []
        self._replies = MemoryReplies(broker)  # the client's one reply link

    @property
    def display(self) -> str:
        return self._display

    @property
    def state(self) -> str:
        return self._state

    @property
    def connections(self) -> int:
        """None: the broker is in this process."""
        return 0

    async def open(self) -> None:
        self._state = "connected"

    async def close(self) -> None:
        self._state = "closed"
        adapters, self._adapters = self._adapters, []
        for adapter in adapters:
            await adapter.close()
        await self._replies.close()

    def adapter(self, entity: Entity, options: AdapterOptions) -> MemoryAdapter:
        if self._state != "connected":
            raise QueueStateError(f"the client of {self._display} is not open")
        unused = options.given()
        if unused:
            raise UnsupportedFeature(
                f"memory:// queues take no network settings; remove {', '.join(unused)}",
                queue=entity.name,
            )
        name = entity.name if entity.kind != QUEUE else (options.address or entity.name)
        adapter = MemoryAdapter(
            self.broker,
            name,
            max_message_size=options.max_message_size,
            display=f"{self._display.rstrip('/')}/{name}",
            entity=entity,
            replies=self._replies,
        )
        self._adapters.append(adapter)
        return adapter
