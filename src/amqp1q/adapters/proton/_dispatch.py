"""What proton's events mean to the sans-IO engine: :class:`Dispatcher`.

The engine's collector gathers proton's events as bytes are fed in, timers run and API calls
change state. The dispatcher drains it: deliveries and flow go to their link (through
``cproton_ffi``, the hot path), a link's attach, detach and end go to the link (a link the peer
began is adopted first and told to the :class:`~._engine.EngineHandler`), sessions the peer
begins or ends are answered, and the connection's open, close and transport errors go to the
handler, every link dying with the connection. It also keeps the table of links by proton
pointer that the routing needs. No I/O: it runs inside :meth:`~._engine.Engine.process`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from cproton_ffi import ffi, lib

from ._deliveries import condition_of
from ._links import Link, ReceiverLink, SenderLink

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["Dispatcher"]

_NULL = ffi.NULL
_LOCAL_CLOSED = lib.PN_LOCAL_CLOSED
_DELIVERY: Final[int] = lib.PN_DELIVERY
_LINK_FLOW: Final[int] = lib.PN_LINK_FLOW
_TRANSPORT: Final[int] = lib.PN_TRANSPORT


class Dispatcher:
    """The events of one engine's collector, routed; ``links``: its links by proton pointer."""

    def __init__(self, engine: Engine, conn: Any, trans: Any, col: Any) -> None:
        self._engine = engine
        self._conn = conn
        self._trans = trans
        self._col = col
        self.links: dict[Any, Link] = {}

    def dispatch(self) -> None:
        """Route every pending event."""
        col = self._col
        peek = lib.pn_collector_peek
        pop = lib.pn_collector_pop
        event_type = lib.pn_event_type
        links = self.links
        while True:
            event = peek(col)
            if event == _NULL:
                return
            kind = event_type(event)
            if kind == _DELIVERY:
                delivery = lib.pn_event_delivery(event)
                link = links.get(lib.pn_delivery_link(delivery))
                if link is not None:
                    link.handle_delivery(delivery)
            elif kind == _LINK_FLOW:
                link = links.get(lib.pn_event_link(event))
                if isinstance(link, SenderLink):
                    if link.on_flow is not None:
                        link.on_flow(link)
                elif isinstance(link, ReceiverLink):
                    link.handle_flow()
            elif kind != _TRANSPORT:
                self._on_event(kind, event)
            pop(col)

    def _on_event(self, kind: int, event: Any) -> None:
        engine = self._engine
        if kind == lib.PN_LINK_REMOTE_OPEN:
            ptr = lib.pn_event_link(event)
            link = self.links.get(ptr)
            if link is None:
                link = self._adopt_link(ptr)
                link.remote_opened = True
                engine.handler.on_link_remote_open(engine, link)
                return
            link.remote_opened = True
            if link.on_remote_open is not None:
                link.on_remote_open(link)
        elif kind in (lib.PN_LINK_REMOTE_CLOSE, lib.PN_LINK_REMOTE_DETACH):
            ptr = lib.pn_event_link(event)
            link = self.links.get(ptr)
            if link is not None:
                link.handle_remote_close(condition_of(lib.pn_link_remote_condition(ptr)))
        elif kind == lib.PN_LINK_FINAL:
            link = self.links.pop(lib.pn_event_link(event), None)
            if link is not None:
                link.handle_death()
        elif kind == lib.PN_SESSION_REMOTE_OPEN:
            session = lib.pn_event_session(event)
            if not lib.pn_session_state(session) & lib.PN_LOCAL_ACTIVE:
                lib.pn_session_open(session)
                engine.touch()
        elif kind == lib.PN_SESSION_REMOTE_CLOSE:
            session = lib.pn_event_session(event)
            if not lib.pn_session_state(session) & _LOCAL_CLOSED:
                lib.pn_session_close(session)
                engine.touch()
            condition = condition_of(lib.pn_session_remote_condition(session))
            for link in list(self.links.values()):
                if lib.pn_link_session(link.ptr) == session and link.alive:
                    link.handle_remote_close(condition)
        elif kind == lib.PN_CONNECTION_REMOTE_OPEN:
            engine.remote_opened = True
            engine.handler.on_remote_open(engine)
        elif kind == lib.PN_CONNECTION_REMOTE_CLOSE:
            condition = condition_of(lib.pn_connection_remote_condition(self._conn))
            if condition is not None:
                engine.error = condition
            # The connection's failure is recorded before its links die with it: their owners
            # then know at once that the connection, not the link, is what ended.
            engine.handler.on_remote_close(engine, condition)
            self._all_links_died()
            engine.close()
        elif kind == lib.PN_TRANSPORT_ERROR:
            condition = condition_of(lib.pn_transport_condition(self._trans))
            if engine.error is None:
                engine.error = condition
            engine.handler.on_transport_error(engine, condition)
            self._all_links_died()
        elif kind == lib.PN_TRANSPORT_CLOSED:
            engine.closed = True
            self._all_links_died()

    def _adopt_link(self, ptr: Any) -> Link:
        name = ffi.string(lib.pn_link_name(ptr)).decode("utf-8", "replace")
        engine = self._engine
        link: Link = (
            SenderLink(engine, ptr, name)
            if lib.pn_link_is_sender(ptr)
            else ReceiverLink(engine, ptr, name)
        )
        self.links[ptr] = link
        return link

    def _all_links_died(self) -> None:
        links = list(self.links.values())
        for link in links:
            if link.alive:
                link.handle_death()
