"""``Broker``: an AMQP 1.0 broker in the running event loop, for tests and the demo.

The broker holds what outlives a connection: the queues (:mod:`._store`), the delivery timers,
the peek-locks (:class:`~._links.Locks`), the faults to inject, and the listener
(:mod:`._server`). Each connection is a :class:`~._connection.BrokerConnection`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as _ssl
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ._connection import BrokerConnection
from ._links import Locks, now_ms
from ._server import Listener, Server
from ._store import BrokerQueue, Store
from ._topics import BrokerTopic

__all__ = ["Broker"]

log = logging.getLogger("amqp1q.testing")

DEFAULT_MAX_FRAME_SIZE: Final = 256 * 1024
DEFAULT_LOCK_DURATION: Final = 30.0


class Broker(Server[BrokerConnection]):
    """An in-process AMQP 1.0 broker on 127.0.0.1.

    ::

        async with Broker() as broker:           # port 0: a free port
            queue = JobQueue.from_url(broker.url, queue="jobs")

    With no ``users`` it takes SASL ANONYMOUS and any PLAIN login (a test peer); ``users``
    (name -> password) makes it check PLAIN logins (ANONYMOUS stays allowed unless
    ``anonymous=False``); ``strict`` answers ``amqp:not-found`` for queues not declared with
    :meth:`declare` (or ``queues=``); ``max_message_size`` is announced on every link that takes
    messages and enforced; ``max_frame_size`` bounds incoming frames; ``ssl`` (a server
    :class:`ssl.SSLContext`) serves ``amqps://``, with SASL EXTERNAL for clients whose
    certificate it verified (``ssl.verify_mode = CERT_REQUIRED`` or ``CERT_OPTIONAL``);
    ``servicebus=True`` emulates Service Bus for azure-servicebus and @azure/service-bus
    clients (see :meth:`servicebus_connection_string`), with a 256 KB ``max_message_size``
    unless given one. ``topics`` (topic -> subscriptions) declares topics (see
    :meth:`declare_topic`); the broker offers the anonymous relay (``Job(to=...)``).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        users: Mapping[str, str] | None = None,
        anonymous: bool = True,
        strict: bool = False,
        queues: Iterable[str] = (),
        topics: Mapping[str, Iterable[str]] | None = None,
        max_message_size: int = 0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        lock_duration: float = DEFAULT_LOCK_DURATION,
        idle_timeout: float | None = None,
        servicebus: bool = False,
        ssl: _ssl.SSLContext | None = None,
    ) -> None:
        self.listener: Listener[BrokerConnection] = Listener(host, port)
        self.users = dict(users or {})
        self.anonymous = anonymous
        self.max_message_size = max_message_size
        self.max_frame_size = max_frame_size
        self.lock_duration_ms = int(lock_duration * 1000)
        self.idle_timeout = idle_timeout
        self.ssl = ssl
        self.default_delay_ms = 0
        self.store = Store(strict=strict, on_schedule=self._schedule)
        for name in queues:
            self.store.declare(name)
        for topic, subscriptions in (topics or {}).items():
            self.store.declare_topic(topic, subscriptions)
        self.locks = Locks()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._refuse_attaches = 0
        self.stats_received = 0
        self.stats_delivered = 0
        # Service Bus emulation hooks (see amqp1q.testing._servicebus); None: plain broker.
        self.servicebus: Any = None
        self._no_servicebus: Any = None
        if servicebus:
            self.enable_servicebus()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> Broker:
        """Listen (on a free port with ``port=0``); returns once listening."""
        if not self.listener.listening:
            loop = asyncio.get_running_loop()
            await self.listener.start(
                lambda host, port: loop.create_server(
                    lambda: BrokerConnection(self), host, port, ssl=self.ssl
                )
            )
            log.info("amqp1q broker listening on %s:%d", self.host, self.port)
        return self

    async def stop(self) -> None:
        """Stop listening and drop every connection (queue contents are kept)."""
        await self.listener.stop()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self.locks.clear()

    async def restart(self) -> None:
        """Stop and start again on the same port, keeping every queue's messages."""
        await self.stop()
        await self.start()

    @property
    def url(self) -> str:
        """``amqp://HOST:PORT`` (``amqps://`` with ``ssl=``), for :meth:`JobQueue.from_url`."""
        return f"{'amqps' if self.ssl else 'amqp'}://{self.host}:{self.port}"

    def url_for(self, user: str) -> str:
        """``amqp://USER:PASSWORD@HOST:PORT`` for one of ``users``."""
        password = urllib.parse.quote(self.users[user], safe="")
        return f"amqp://{urllib.parse.quote(user, safe='')}:{password}@{self.host}:{self.port}"

    def servicebus_connection_string(
        self, queue: str | None = None, *, key_name: str = "RootManageSharedAccessKey"
    ) -> str:
        """A Service Bus connection string for this broker (``UseDevelopmentEmulator=true``)."""
        key = self.users.get(key_name, "amqp1q-test-key")
        text = (
            f"Endpoint=sb://{self.host}:{self.port};SharedAccessKeyName={key_name};"
            f"SharedAccessKey={key};UseDevelopmentEmulator=true"
        )
        return text + (f";EntityPath={queue}" if queue else "")

    def enable_servicebus(self) -> None:
        """Emulate Service Bus for azure-servicebus clients ($cbs, $management; see
        :mod:`amqp1q.testing._servicebus`), with :meth:`servicebus_connection_string`. Links
        that take messages announce ``max_message_size`` (by default Service Bus Standard's
        256 KB)."""
        from ._servicebus import SERVICEBUS_MAX_MESSAGE_SIZE, ServiceBusEmulation

        if self.servicebus is None:
            self.servicebus = ServiceBusEmulation(self)
            self.max_message_size = self.max_message_size or SERVICEBUS_MAX_MESSAGE_SIZE

    # -- queues ---------------------------------------------------------------------------------

    def declare(self, name: str, *, requires_session: bool = False) -> BrokerQueue:
        """The queue ``name`` (made if need be). ``requires_session``: a Service Bus queue with
        sessions (see :mod:`amqp1q.testing._sessions`): each message must carry a SessionId
        (its ``group-id``), and is received by the one session receiver that locked its
        session, in order."""
        return self.store.declare(name, requires_session=requires_session)

    def declare_topic(self, name: str, *subscriptions: str) -> BrokerTopic:
        """The topic ``name`` with ``subscriptions`` (``name/Subscriptions/SUB``, each a queue
        with its own dead-letter queue): what is pushed to it is copied to each."""
        return self.store.declare_topic(name, subscriptions)

    def queue(self, name: str) -> BrokerQueue:
        """The queue ``name`` (created if need be), to inspect in tests."""
        queue = self.store.queue(name, create=True)
        assert queue is not None
        return queue

    @property
    def connection_count(self) -> int:
        return len(self.listener.connections)

    @property
    def link_count(self) -> int:
        """Links attached now, over every connection (what a caller left behind, say)."""
        return sum(len(connection.links) for connection in self.listener.connections)

    # -- faults ---------------------------------------------------------------------------------

    def drop_connections(self) -> int:
        """Abort every connection at once (no close frames); returns how many."""
        return self.listener.abort_all()

    def refuse_attaches(self, count: int) -> None:
        """Refuse the next ``count`` link attaches with ``amqp:resource-limit-exceeded``."""
        self._refuse_attaches = count

    def stall(self) -> None:
        """Stop reading from and writing to every current connection (a hung peer)."""
        for connection in self.listener.connections:
            connection.stall()

    # -- internals ------------------------------------------------------------------------------

    def _schedule(self, queue: BrokerQueue) -> None:
        due = queue.next_due()
        timer = self._timers.pop(queue.name, None)
        if timer is not None:
            timer.cancel()
        if due is None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, (due - now_ms()) / 1000)
        self._timers[queue.name] = loop.call_later(delay, self._fire, queue)

    def _fire(self, queue: BrokerQueue) -> None:
        self._timers.pop(queue.name, None)
        queue.promote_due(now_ms())
        self._schedule(queue)

    def take_refusal(self) -> bool:
        """Whether to refuse this attach (one of those ``refuse_attaches`` asked for)."""
        if self._refuse_attaches > 0:
            self._refuse_attaches -= 1
            return True
        return False

    def check_login(self, user: str, password: str) -> bool:
        """Whether a SASL PLAIN login may connect (see ``users``)."""
        if not self.users:
            return True  # a test peer takes any PLAIN login
        if self.servicebus is not None and user not in self.users:
            return True  # not a key name: a client that authorizes by $cbs token instead
        # A SAS key name and its key over PLAIN (as AMQP clients reach Service Bus); the
        # emulation lets such a connection attach without a $cbs token.
        return self.users.get(user) == password
