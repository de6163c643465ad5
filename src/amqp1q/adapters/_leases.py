"""What a shared connection (Proton) and a shared SDK client (Service Bus) have in common:
leases and members.

Each open adapter holds a lease, and a client (``amqp1q.connect()``) holds one while it is
open: the first lease connects, the last one disconnects. The adapters made on it are its
members, so closing the client closes them all first. Subclasses say how to connect (in
``acquire``) and how to disconnect (:meth:`Leases._disconnect`).
"""

from __future__ import annotations

import asyncio
from typing import Generic, Protocol, TypeVar

__all__ = ["Leases"]


class _Member(Protocol):
    async def close(self) -> None: ...


M = TypeVar("M", bound=_Member)


class Leases(Generic[M]):
    """Lease counting and the members of one shared connection."""

    def __init__(self) -> None:
        self._members: set[M] = set()
        self._leases = 0
        self._ended = False  # closed by its client: never connected again

    async def acquire(self) -> None:
        """Take a lease, connecting if need be."""
        raise NotImplementedError

    async def _disconnect(self) -> None:
        raise NotImplementedError

    def join(self, member: M) -> None:
        self._members.add(member)

    def leave(self, member: M) -> None:
        self._members.discard(member)

    async def release(self) -> None:
        """Give a lease back; the last one disconnects."""
        self._leases -= 1
        if self._leases <= 0:
            self._leases = 0
            await self._disconnect()

    # -- the Backend a client opens -------------------------------------------------------------

    async def open(self) -> None:
        """Connect, for a client: its lease is held until :meth:`close`."""
        await self.acquire()

    async def close(self) -> None:
        """The client closes: its members first, then the connection, whatever is left on it."""
        self._ended = True
        members = list(self._members)
        if members:
            await asyncio.gather(*(m.close() for m in members), return_exceptions=True)
        self._leases = 0
        await self._disconnect()
