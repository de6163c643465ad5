"""Service Bus emulation for the embedded broker: enough for azure-servicebus's clients.

Installed by ``Broker(servicebus=True)`` (or :meth:`Broker.enable_servicebus`); the broker then
hands every link attach to :meth:`ServiceBusEmulation.attach` first. What it adds to the plain
broker, as the SDK (7.x, pyamqp transport) speaks it:

- ``$cbs``: claims-based security. The SDK attaches a sender and a receiver to ``$cbs`` and sends
  ``put-token`` requests (no reply-to); the answer goes back on its ``$cbs`` receiver link, with
  ``correlation-id`` = the request's ``message-id`` and ``status-code`` / ``status-description``
  application properties. Any token is accepted unless the broker has ``users`` (key name ->
  key): then the SAS token's signature must verify against the key its ``skn`` names, and a
  connection must have put a valid token before it may attach to an entity.
- ``QUEUE/$management`` (and ``QUEUE/$DeadLetterQueue/$management``): request/response with
  ``statusCode`` / ``statusDescription`` (and ``errorCondition``) application properties and an
  AMQP-value map body. Service Bus's operations (:mod:`._sb_operations`):
  ``com.microsoft:renew-lock``, ``schedule-message``, ``cancel-scheduled-message`` and
  ``peek-message``; the session operations
  (``renew-session-lock``, ``get-session-state``, ``set-session-state``: :mod:`._sessions`);
  and amqp1q's own operations (:mod:`._management_ops`), which the plain broker answers too.
- Sessions (:mod:`._sessions`): a receiver on a queue that requires sessions attaches with a
  session filter and holds that session's lock.
- Settlement echo: with receive-settle-mode ``second`` (PEEK_LOCK) the SDK sends its outcome
  unsettled and waits until the broker settles the delivery *with the same outcome*
  (``accepted``, ``modified``, ``rejected`` without an error); a settlement after the lock expired
  is answered ``rejected`` with ``com.microsoft:message-lock-lost``.

Entity links themselves stay the broker's (``Incoming`` / ``Outgoing`` in :mod:`._links`): they
already unpack batches (message format 0x80013700), use 16-byte delivery tags as lock tokens
(the SDK reads ``uuid.UUID(bytes_le=tag)``), stamp ``x-opt-enqueued-time``,
``x-opt-sequence-number`` and ``x-opt-locked-until``, and expire locks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
import urllib.parse
import weakref
from typing import TYPE_CHECKING, Any, Final

from ..adapters.proton.wire import (
    ACCEPTED,
    MODIFIED,
    REJECTED,
    RELEASED,
    AMQPDecodeError,
    Condition,
    Delivery,
    Int,
    Link,
    Message,
    ReceiverLink,
    SenderLink,
    Symbol,
    decode_message,
    encode_message,
)
from ._links import Taking
from ._management_ops import AMQP1Q_OPERATIONS, Reply
from ._sb_operations import LOCK_LOST, SERVICEBUS_OPERATIONS, VENDOR, text_keys
from ._sessions import SESSION_OPERATIONS, attach_session_receiver
from ._store import BrokerQueue, queue_name

if TYPE_CHECKING:
    from ._broker import Broker
    from ._connection import BrokerConnection

__all__ = [
    "CBS_NODE",
    "MANAGEMENT_SUFFIX",
    "NO_SERVICEBUS",
    "SERVICEBUS_MAX_MESSAGE_SIZE",
    "ServiceBusEmulation",
    "stand_in",
]

log = logging.getLogger("amqp1q.testing")

CBS_NODE: Final = "$cbs"
MANAGEMENT_SUFFIX: Final = "/$management"
#: Credit kept granted on request links ($cbs and $management senders).
REQUEST_CREDIT: Final = 100
_TERMINAL: Final = frozenset({ACCEPTED, REJECTED, RELEASED, MODIFIED})
PLAIN_BROKER: Final = "amqp1q broker without the Service Bus emulation"
#: What a Service Bus client hears from a broker that does not emulate Service Bus.
NO_SERVICEBUS: Final = (
    "this amqp1q broker does not emulate Azure Service Bus: start it with "
    "`amqp1q broker --servicebus` (from Python: Broker(servicebus=True))"
)
#: The max-message-size the emulation announces unless given one: the Standard tier's 256 KB.
#: Clients size batches by it (@azure/service-bus takes an announced 0 literally: no message
#: then fits in a batch).
SERVICEBUS_MAX_MESSAGE_SIZE: Final = 256 * 1024


class ServiceBusEmulation:
    """The Service Bus nodes of one :class:`~amqp1q.testing.Broker` (see the module docstring)."""

    def __init__(self, broker: Broker, *, refusal: str | None = None) -> None:
        self.broker = broker
        #: Set on a broker that does not emulate Service Bus: every put-token is answered 501
        #: with this description, so an SDK fails at once saying why (a refused ``$cbs`` attach
        #: leaves azure-servicebus waiting forever, and an unanswered put-token 60 s).
        self.refusal = refusal
        #: Per connection: the client's receiver links for node answers, by node address.
        self._responders: weakref.WeakKeyDictionary[BrokerConnection, dict[str, _Responder]] = (
            weakref.WeakKeyDictionary()
        )
        #: Connections that put a valid token (only checked when the broker has ``users``).
        self._authorized: weakref.WeakSet[BrokerConnection] = weakref.WeakSet()
        self.tokens_accepted = 0
        self.tokens_refused = 0

    # -- attach ---------------------------------------------------------------------------------

    def attach(self, connection: BrokerConnection, link: Link, address: str | None) -> bool:
        """Take the link if it is a Service Bus node's; False leaves it to the broker."""
        node = _node(address)
        if node is None:
            return self._entity(connection, link, address)
        if isinstance(link, SenderLink):  # the client's receiver: answers go out here
            link.wrapper.source.address = address or ""
            link.open()
            responder = _Responder(self, connection, node, link)
            self._responders.setdefault(connection, {})[node] = responder
            role: _Responder | _Requests = responder
        else:
            assert isinstance(link, ReceiverLink)
            link.wrapper.target.address = address or ""
            link.open()
            role = _Requests(self, connection, node, link)
        connection.links[link] = role
        link.on_remote_close = connection.link_closed
        return True

    def _entity(self, connection: BrokerConnection, link: Link, address: str | None) -> bool:
        plain_key = connection.user is not None and connection.user in self.broker.users
        if self.broker.users and connection not in self._authorized and not plain_key:
            link.open()
            link.close(
                Condition("amqp:unauthorized-access", "put a valid token on $cbs before attaching")
            )
            return True
        if isinstance(link, SenderLink):
            name = queue_name(address)
            queue = self.broker.store.queue(name) if name else None
            if queue is not None and attach_session_receiver(connection, link, address, queue):
                return True
            if link.remote_rcv_settle_mode == 1:
                _echo_outcomes(self.broker, link)
        return False

    def responder(self, connection: BrokerConnection, node: str) -> _Responder | None:
        return self._responders.get(connection, {}).get(node)

    def _responder_gone(self, responder: _Responder) -> None:
        nodes = self._responders.get(responder.connection)
        if nodes is not None and nodes.get(responder.node) is responder:
            del nodes[responder.node]

    # -- requests -------------------------------------------------------------------------------

    def handle(self, connection: BrokerConnection, node: str, request: Message) -> None:
        props = text_keys(request.application_properties)
        operation = str(props.get("operation") or "")
        if node == CBS_NODE and self._closed_for_refusal(connection):
            return
        if node == CBS_NODE:
            reply = self._cbs(connection, operation, request)
        else:
            reply = self._management(node, operation, request, props)
        status, description, body, condition = reply
        target = request.reply_to or node
        responder = self.responder(connection, _node(target) or node)
        if responder is None:
            log.info("no link to answer %s on %s", operation, node)
            return
        codes = ("status-code", "status-description") if node == CBS_NODE else _MGMT_FIELDS
        app: dict[Any, Any] = {codes[0]: Int(status), codes[1]: description}
        if condition is not None:
            app["error-condition" if node == CBS_NODE else "errorCondition"] = Symbol(condition)
        response = Message(
            correlation_id=request.message_id,
            to=request.reply_to,
            application_properties=app,
            body_kind="value",
            body=body,
        )
        responder.send(encode_message(response))

    def _closed_for_refusal(self, connection: BrokerConnection) -> bool:
        """On a broker without the emulation, refuse an azure-servicebus (Python) client's token
        by closing its connection: it retries a token answered with an error status (for about
        15 s) and drops the description, but gives up at once, description intact, on a
        connection closed with ``amqp:not-implemented``. @azure/service-bus is the other way
        round (a closed connection leaves it waiting out its operation timeout), as other
        clients may be: they get the answer (:meth:`_cbs`)."""
        engine = connection.engine
        if self.refusal is None or engine is None:
            return False
        if not str(engine.remote_properties.get("product", "")).startswith("azsdk-python"):
            return False
        self.tokens_refused += 1
        log.warning("a Service Bus client put a token: %s", self.refusal)
        # A non-empty info map: azure-servicebus reads the error's third field unconditionally.
        engine.close(Condition("amqp:not-implemented", self.refusal, {"broker": PLAIN_BROKER}))
        return True

    def _cbs(self, connection: BrokerConnection, operation: str, request: Message) -> Reply:
        if operation != "put-token":
            return 400, f"unknown $cbs operation {operation!r}", None, "amqp:not-implemented"
        if self.refusal is not None:
            self.tokens_refused += 1
            log.warning("a Service Bus client put a token: %s", self.refusal)
            return 501, self.refusal, None, None
        token = request.body if request.body_kind == "value" else None
        if isinstance(token, bytes):
            token = token.decode("utf-8", "replace")
        problem = self._check_token(token if isinstance(token, str) else "")
        if problem is not None:
            self.tokens_refused += 1
            return 401, problem, None, None
        self.tokens_accepted += 1
        self._authorized.add(connection)
        return 200, "OK", None, None

    def _check_token(self, token: str) -> str | None:
        """None if the token is acceptable: always without ``users``, else a valid signature."""
        users = self.broker.users
        if not users:
            return None
        if not token.startswith("SharedAccessSignature "):
            return "not a SharedAccessSignature token"
        fields = dict(urllib.parse.parse_qsl(token[len("SharedAccessSignature ") :]))
        key = users.get(fields.get("skn", ""))
        if key is None:
            return f"unknown key name {fields.get('skn')!r}"
        try:
            expiry = int(fields.get("se", ""))
        except ValueError:
            return "no expiry (se) in the token"
        if expiry < time.time():
            return "the token has expired"
        signed = f"{urllib.parse.quote_plus(fields.get('sr', ''))}\n{expiry}".encode()
        digest = hmac.new(key.encode(), signed, hashlib.sha256).digest()
        if not hmac.compare_digest(base64.b64encode(digest).decode(), fields.get("sig", "")):
            return "the signature does not match the key"
        return None

    def _management(
        self, node: str, operation: str, request: Message, props: dict[str, Any]
    ) -> Reply:
        queue = self._queue_of(node)
        if queue is None:
            return 404, f"no entity for {node!r}", None, "amqp:not-found"
        handler = SERVICEBUS_OPERATIONS.get(operation) if self.refusal is None else None
        session = SESSION_OPERATIONS.get(operation) if self.refusal is None else None
        own = AMQP1Q_OPERATIONS.get(operation)
        if handler is None and session is None and own is None:
            return 501, f"operation {operation!r} is not emulated", None, "amqp:not-implemented"
        body = request.body if request.body_kind == "value" else None
        fields = text_keys(body if isinstance(body, dict) else {})
        link = props.get("associated-link-name")
        try:
            if session is not None:
                return session(queue, fields, str(link) if link is not None else None)
            if handler is not None:
                return handler(self.broker, queue, fields)
            return own(queue, fields)  # type: ignore[misc]
        except (AMQPDecodeError, KeyError, TypeError, ValueError) as exc:
            return 400, f"bad {operation} request: {exc}", None, VENDOR + "argument-error"

    def _queue_of(self, node: str) -> BrokerQueue | None:
        return self.broker.store.queue(node[: -len(MANAGEMENT_SUFFIX)])


_MGMT_FIELDS: Final = ("statusCode", "statusDescription")


class _Requests(Taking):
    """The client's sender to a node: each message is a request, accepted and answered."""

    window = REQUEST_CREDIT

    def __init__(
        self,
        emulation: ServiceBusEmulation,
        connection: BrokerConnection,
        node: str,
        link: ReceiverLink,
    ) -> None:
        self.emulation = emulation
        self.connection = connection
        self.node = node
        super().__init__(link)

    def take(self, delivery: Delivery, payload: bytes) -> bool:
        try:
            request = decode_message(payload)
        except AMQPDecodeError as exc:
            delivery.settle(REJECTED, condition=Condition("amqp:decode-error", str(exc)))
        else:
            if not delivery.remote_settled:
                delivery.settle(ACCEPTED)
            self.emulation.handle(self.connection, self.node, request)
        return True


class _Responder:
    """The client's receiver from a node: answers go out pre-settled, queued while no credit."""

    def __init__(
        self,
        emulation: ServiceBusEmulation,
        connection: BrokerConnection,
        node: str,
        link: SenderLink,
    ) -> None:
        self.emulation = emulation
        self.connection = connection
        self.node = node
        self.link = link
        self.pending: list[bytes] = []
        link.on_flow = self._on_flow

    def send(self, payload: bytes) -> None:
        self.pending.append(payload)
        self._on_flow(self.link)

    def _on_flow(self, link: SenderLink) -> None:
        while self.pending and link.alive and link.credit > 0:
            link.send(self.pending.pop(0), None)

    def closed(self) -> None:
        self.pending.clear()
        self.emulation._responder_gone(self)


def stand_in(broker: Broker, address: str | None) -> ServiceBusEmulation | None:
    """For a ``$cbs`` link on a broker without the emulation: a stand-in that refuses every
    token, saying why (:data:`NO_SERVICEBUS`); for a ``QUEUE/$management`` link, the same
    stand-in, answering amqp1q's own operations only; None for any other address."""
    if _node(address) is None:
        return None
    if broker._no_servicebus is None:
        broker._no_servicebus = ServiceBusEmulation(broker, refusal=NO_SERVICEBUS)
    stand: ServiceBusEmulation = broker._no_servicebus
    return stand


def _echo_outcomes(broker: Broker, link: SenderLink) -> None:
    """Settle each delivery with the outcome the client chose (rcv-settle-mode ``second``):
    the SDK reports a settlement unconfirmed otherwise. A delivery whose lock has expired is
    answered ``rejected`` with ``com.microsoft:message-lock-lost``."""

    def refusal(tag: bytes) -> Condition | None:
        if broker.locks.owner(tag) is None:
            return Condition(LOCK_LOST, "the message's lock has expired")
        return None

    link.echo_outcomes = refusal


def _node(address: str | None) -> str | None:
    """``$cbs`` or ``QUEUE/$management`` (DLQ spelled the broker's way) for a node's address."""
    name = queue_name(address)
    if name is None:
        return None
    if name.lower() == CBS_NODE:
        return CBS_NODE
    if name.lower().endswith(MANAGEMENT_SUFFIX):
        entity = queue_name(name[: -len(MANAGEMENT_SUFFIX)])
        return None if entity is None else entity + MANAGEMENT_SUFFIX
    return None
