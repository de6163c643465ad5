"""A client connection: an :class:`Engine` and its :class:`Pump`, with awaitable open and attach.

This is where proton's conditions and the socket's exceptions become amqp1q's typed errors,
each naming the broker as ``host:port`` (never with credentials).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

from ..._errors import (
    Amqp1qError,
    AuthenticationFailed,
    ConnectFailed,
    ConnectionLost,
    QueueNotFound,
    TLSError,
)
from . import _frames as frames
from ._deliveries import Condition
from ._driver import Pump, open_pump
from ._engine import Engine
from ._links import Link, ReceiverLink, SenderLink

__all__ = ["ClientConnection", "is_loopback", "link_error"]

log = logging.getLogger("amqp1q.proton")
L = TypeVar("L", bound=Link)

_AUTH_CONDITIONS = frozenset({"amqp:unauthorized-access"})
_NOT_FOUND = frozenset({"amqp:not-found", "amqp:resource-deleted"})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def link_error(
    condition: Condition | None, *, queue: str | None, address: str, what: str, hint: str = ""
) -> Amqp1qError:
    """The error for a link the broker refused or closed; ``hint`` ends a QueueNotFound's
    message (how to declare the queue on this broker)."""
    if condition is not None and condition.name in _NOT_FOUND:
        return QueueNotFound(
            f"the broker has no node at {address!r}{hint}",
            queue=queue,
            address=address,
            condition=condition.name,
            description=condition.description,
        )
    return ConnectionLost(
        f"the broker closed the {what} link",
        queue=queue,
        address=address,
        condition=condition.name if condition else None,
        description=condition.description if condition else None,
    )


class ClientConnection:
    """One connection to a broker. ``await open()``, attach links, ``await close()``."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None,
        container_id: str,
        user: str | None,
        password: str | None,
        mechanisms: str,
        virtual_host: str | None,
        idle_timeout: float | None,
        properties: dict[str, Any],
        queue: str | None,
    ) -> None:
        self.host = host
        self.port = port
        self.where = f"{'[' + host + ']' if ':' in host else host}:{port}"
        self._ssl_context = ssl_context
        self._server_hostname = server_hostname
        self._queue = queue
        self._mechanisms = mechanisms
        #: The Open frame's hostname: the broker's virtual host.
        self.virtual_host = virtual_host
        self.engine = Engine(
            self,
            container_id=container_id,
            hostname=virtual_host,
            user=user,
            password=password,
            mechanisms=mechanisms,
            idle_timeout=idle_timeout,
            properties=properties,
        )
        if frames.enabled():  # decided per connection: with the logger off, nothing is traced
            frames.trace_frames(self.engine, where=self.where, queue=queue)
        self._pump: Pump | None = None
        self._opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.failure: Amqp1qError | None = None
        #: ``(address, queue) -> text`` ending a QueueNotFound's message (set by its owner).
        self.not_found_hint: Callable[[str, str], str] | None = None
        self._lost_listeners: list[Callable[[Amqp1qError], None]] = []

    # -- opening --------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, authenticate and exchange Open frames. Raises a typed, redacted error."""
        try:
            self._pump = await open_pump(
                self.engine,
                self.host,
                self.port,
                ssl_context=self._ssl_context,
                server_hostname=self._server_hostname,
                on_lost=self._on_socket_lost,
            )
        except ssl.SSLError as exc:
            raise TLSError(
                f"TLS handshake with {self.where} failed: {exc.reason or exc}" + _tls_hint(exc),
                queue=self._queue,
            ) from None
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise ConnectFailed(
                f"cannot connect to {self.where}: {reason}", queue=self._queue
            ) from None
        self.engine.open()
        self._pump.flush()
        try:
            await self._opened
        except BaseException:
            # Refused, timed out or cancelled mid-handshake: the socket goes with it, now.
            self._pump.abort()
            raise
        self._pump.start_ticking()

    @property
    def remote_properties(self) -> dict[str, Any]:
        return self.engine.remote_properties

    @property
    def is_open(self) -> bool:
        return (
            self.failure is None
            and self._opened.done()
            and self._pump is not None
            and not self._pump.lost
        )

    def on_lost(self, listener: Callable[[Amqp1qError], None]) -> None:
        """Call ``listener`` with the error once, if the connection dies (not on our close)."""
        self._lost_listeners.append(listener)

    # -- links ----------------------------------------------------------------------------------

    def offers(self, capability: str) -> bool:
        """Whether the broker's Open frame offered ``capability`` (``ANONYMOUS-RELAY``, ...)."""
        return capability in self.engine.remote_offered_capabilities

    @property
    def local_port(self) -> int | None:
        """This end's TCP port (how a broker's connection list names the connection)."""
        return self._pump.local_port if self._pump is not None else None

    async def attach_sender(
        self, address: str | None, *, queue: str | None = None, **options: Any
    ) -> SenderLink:
        """Attach a sender to ``address`` (None: the anonymous relay); ``queue`` names the
        queue an error concerns (on a connection several queues share)."""
        link = self.engine.open_sender(address, **options)
        return await self._attached(link, address or "(anonymous)", "sender", queue)

    async def attach_receiver(
        self, address: str | None, *, queue: str | None = None, **options: Any
    ) -> ReceiverLink:
        """Attach a receiver to ``address`` (None with ``dynamic=True``: a node the broker
        makes; its address is then the link's ``remote_source_address``)."""
        link = self.engine.open_receiver(address, **options)
        return await self._attached(link, address or "(dynamic)", "receiver", queue)

    async def _attached(self, link: L, address: str, what: str, queue: str | None) -> L:
        """Wait for the peer's attach. A refusal is an attach with a null terminus followed by a
        detach carrying the reason: wait for that detach, to report the reason."""
        self._check()
        queue = queue or self._queue
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def opened(_: Link) -> None:
            if not link.remote_terminus_is_null and not done.done():
                done.set_result(None)

        def closed(_: Link, condition: Condition | None) -> None:
            if not done.done():
                err = self.failure or link_error(
                    condition,
                    queue=queue,
                    address=address,
                    what=what,
                    hint=self._hint(address, queue),
                )
                done.set_exception(err)

        link.on_remote_open = opened
        link.on_remote_close = closed
        try:
            await done
        except BaseException:
            link.on_remote_close = None
            link.close()
            raise
        link.on_remote_open = None
        link.on_remote_close = None
        if not link.alive:  # attached and detached in the same read: the detach says why
            raise self.failure or link_error(
                link.remote_condition,
                queue=queue,
                address=address,
                what=what,
                hint=self._hint(address, queue),
            )
        return link

    def _hint(self, address: str, queue: str | None) -> str:
        if self.not_found_hint is None:
            return ""
        return self.not_found_hint(address, queue or "")

    def _check(self) -> None:
        if self.failure is not None:
            raise self.failure

    # -- closing --------------------------------------------------------------------------------

    async def close(self, timeout: float) -> None:
        """Close gracefully within ``timeout``, else abort. Never raises for a dead connection."""
        self._lost_listeners.clear()
        pump = self._pump
        if pump is None or pump.lost:
            return
        if not self.engine.remote_opened:  # the peer never answered: nothing to close politely
            pump.abort()
            return
        await pump.close(timeout)

    def abort(self) -> None:
        if self._pump is not None:
            self._pump.abort()

    # -- EngineHandler ------------------------------------------------------------------------

    def on_remote_open(self, engine: Engine) -> None:
        if not self._opened.done():
            self._opened.set_result(None)

    def on_remote_close(self, engine: Engine, condition: Condition | None) -> None:
        name = condition.name if condition else None
        description = condition.description if condition else None
        if name in _AUTH_CONDITIONS:
            # Not a passing failure: RabbitMQ closes so when the user may not use the virtual
            # host (or it does not exist), as it begins the first session after the Open.
            vhost = self.virtual_host
            where = f" to {vhost!r}" if vhost and vhost != self.host else ""
            self._fail(
                AuthenticationFailed(
                    f"the broker at {self.where} refused access{where} (does the virtual host "
                    "exist, and may this user use it?)",
                    queue=self._queue,
                    condition=name,
                    description=description,
                )
            )
            return
        self._fail(
            ConnectionLost(
                f"the broker at {self.where} closed the connection",
                queue=self._queue,
                condition=name,
                description=description,
            )
        )

    def on_transport_error(self, engine: Engine, condition: Condition | None) -> None:
        self._fail(self._transport_error(condition))

    def on_link_remote_open(self, engine: Engine, link: Link) -> None:
        link.close(Condition("amqp:not-allowed", "this client accepts no links"))

    def _transport_error(self, condition: Condition | None) -> Amqp1qError:
        name = condition.name if condition else None
        description = condition.description if condition else None
        if name in _AUTH_CONDITIONS:
            return AuthenticationFailed(
                f"the broker at {self.where} refused the credentials",
                queue=self._queue,
                condition=name,
                description=description,
            )
        if (
            not self._opened.done()
            and self._ssl_context is not None
            and description
            and "protocol header" in description.lower()
        ):
            # TLS 1.3: a broker that refuses the client's certificate says so after the
            # handshake, by closing the stream before any AMQP byte.
            return TLSError(
                f"the broker at {self.where} closed the TLS connection before AMQP began "
                "(does it require a client certificate it trusts? set tls cert and key)",
                queue=self._queue,
                condition=name,
                description=description,
            )
        if not self._opened.done():
            hint = ""
            if self._ssl_context is None and description and "header" in description.lower():
                hint = " (is this a TLS port? use amqps://)"
            return ConnectFailed(
                f"the AMQP 1.0 handshake with {self.where} failed{hint}",
                queue=self._queue,
                condition=name,
                description=description,
            )
        return ConnectionLost(
            f"the connection to {self.where} failed",
            queue=self._queue,
            condition=name,
            description=description,
        )

    def _on_socket_lost(self, exc: BaseException | None) -> None:
        if self.failure is None:
            if isinstance(exc, ssl.SSLError):
                err: Amqp1qError = TLSError(
                    f"TLS with {self.where} failed: {exc.reason or exc}", queue=self._queue
                )
            elif self.engine.sasl_refused:
                err = self._transport_error(Condition("amqp:unauthorized-access", None))
            elif self.engine.no_common_mechanism:
                err = AuthenticationFailed(
                    f"the broker at {self.where} offers no SASL mechanism amqp1q may use here "
                    f"(amqp1q offered {self._mechanisms}; a broker that takes ANONYMOUS only "
                    "wants no user and password in the URL)",
                    queue=self._queue,
                    condition="amqp:unauthorized-access",
                )
            elif not self._opened.done():
                err = ConnectFailed(
                    f"{self.where} closed the connection during the AMQP 1.0 handshake"
                    + ("" if self._ssl_context else " (a TLS port? an AMQP 0-9-1 port?)"),
                    queue=self._queue,
                )
            else:
                err = ConnectionLost(
                    f"the connection to {self.where} was lost" + (f": {exc}" if exc else ""),
                    queue=self._queue,
                )
            self._fail(err)

    def _fail(self, err: Amqp1qError) -> None:
        if self.failure is not None:
            return
        self.failure = err
        if not self._opened.done():
            self._opened.set_exception(err)
            self._opened.exception()  # retrieved: the opener may already have gone
        listeners, self._lost_listeners = self._lost_listeners, []
        for listener in listeners:
            try:
                listener(err)
            except Exception:  # noqa: PERF203  # pragma: no cover - a listener bug must not hide it
                log.exception("a connection-lost listener failed")
        if self._pump is not None and not self._pump.lost:
            self._pump.flush()


def _tls_hint(exc: ssl.SSLError) -> str:
    text = f"{exc.reason} {exc}".lower()
    if "wrong version number" in text or "record layer" in text or "unexpected eof" in text:
        return " (is this a plaintext port? use amqp://)"
    verify = getattr(exc, "verify_message", None)
    if verify and "mismatch" in str(verify).lower():
        return (
            f": {verify} (the certificate was issued for another hostname or IP address; "
            "connect by a name it covers, or set tls server_hostname)"
        )
    if "certificate verify failed" in text:
        detail = f": {verify}" if verify else ""
        return (
            f"{detail} (the broker's certificate did not verify; set tls root_ca, "
            "or insecure_skip_verify)"
        )
    return ""
