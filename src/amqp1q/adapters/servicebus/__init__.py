"""``ServiceBusAdapter``: the :class:`~amqp1q.Adapter` for Azure Service Bus, on
``azure.servicebus.aio`` (the optional extra ``amqp1q[azure]``).

Made by ``JobQueue.from_url("Endpoint=sb://...;EntityPath=QUEUE")`` (also with
``UseDevelopmentEmulator=true`` and an explicit port), or for Azure AD with
:meth:`ServiceBusAdapter.from_credential` and ``JobQueue(adapter)``.

- **push**: jobs become ``ServiceBusMessage`` (id = message_id, name = subject, headers =
  application properties) and go out through one ``ServiceBusSender`` in batches under the link's
  size limit; concurrent pushes are coalesced into the same batches. ``delay`` is
  ``schedule_messages`` (the receipt carries the sequence number). Service Bus has no priority:
  a non-zero priority is :class:`~amqp1q.UnsupportedFeature` unless ``ignore_priority=True``.
  With ``wire_format="roadrunner"`` the body is the RoadRunner ``amqp1`` driver's envelope
  (:mod:`amqp1q._roadrunner`, shared with the Proton adapter), which carries a job's priority.
- **consume**: one ``ServiceBusReceiver`` per consumer, PEEK_LOCK (RECEIVE_AND_DELETE with
  ``auto_ack``), with the SDK's own prefetch off: a background pump asks for exactly the credit
  the consumer granted and not yet used, so the link credit follows the consumer's.
- **settlement** (DESIGN section 3): ack = complete (in the background, bounded, so acks never
  queue behind each other's round trips); retry() = abandon; retry(delay) = scheduled re-send with
  the attempt counted, then complete; release = re-send with the attempt unchanged, then complete
  (abandon would count an attempt); reject = dead_letter(reason, description).
- **faults**: a receive, send, settlement or renewal that fails with its connection gets the
  consumer's receiver (or the sender) replaced by a fresh SDK object, with the queue's
  ``ReconnectPolicy``; the consume loop goes on, and raises ``ConnectionLost`` only once the
  policy gives up. Failed sends are sent again (the same message-ids).
- **locks**: every message held (buffered or in hand) has its lock renewed at half its span,
  for at most ``max_lock_renewal`` seconds from receipt; settling stops it. When renewal is
  refused the job is marked lost: settling it raises :class:`~amqp1q.LockLost`, code inside
  :func:`lock_scope` is cancelled and gets ``LockLost``, and the broker redelivers the job.

Modules, each with one job:

- ``_sdk``: the azure-servicebus names used, imported once (the missing-extra ``ImportError``),
  and azure-core credentials fitted to the asyncio client;
- ``_mapping``: Job <-> ``ServiceBusMessage`` (amqp1q's format or RoadRunner's), and a
  received message -> ``Incoming``;
- ``_errors``: the SDK's exceptions -> amqp1q's, for opening, pushing and settling;
- ``_sending``: the outbox, coalescing concurrent pushes into batches under the size limit;
  ``_outboxes``: an adapter's outboxes (its entity's, and one per ``Job(to=...)``
  destination) and what goes through them;
- ``_shared_client``: the ``ServiceBusClient`` many adapters share (``amqp1q.connect``'s
  backend); ``_entities``: queues, topics and subscriptions;
- ``_reconnect``: replacing a failed sender or receiver, and the connection state;
- ``_locks``: a held message's lock deadline, the renewer, and :func:`lock_scope`;
- ``_receiving``: one consumer's receiver: the credit pump, lock renewal, settlements;
- ``_sessions``: ``consume(groups=N)``'s receiver over up to N sessions (credit, pumps,
  receiving and settling); ``_held_session``: one session it holds (taking it, its lock's
  renewal, its state);
- ``_pushing``: what an adapter pushes (jobs as messages, the priority check, re-sent copies,
  replies) and its senders;
- ``adapter``: :class:`ServiceBusAdapter`, the :class:`~amqp1q.Adapter` implementation.

Private azure-servicebus attributes relied on (each optional: without it the adapter still
works, only less well), to check on every SDK upgrade:

- ``ServiceBusSender._max_batch_size_on_link`` and ``._max_message_size_on_link``, read by
  ``_sending.Outbox._batch_limit``: batches are sized under the smaller, since the SDK sizes
  them by the vendor batch limit, which may exceed the link's max-message-size;
- ``ServiceBusReceiver._further_pull_receive_timeout``, set by
  ``_receiving.QueueReceiver._connect``: how long a pull goes on collecting after its first
  message (the SDK's 0.2 s delays every job);
- ``_config.retry_total`` (``_sdk.open_once``: opening makes one attempt);
- ``_open`` and ``_running`` (``_sdk.no_reopen``: a sender or receiver whose handler failed
  does not reopen itself; amqp1q opens a fresh one);
- ``_create_handler``, ``_handler.open_async`` and ``_handler._connection._transport``
  (``_sdk.track_sockets``): the sockets the SDK's close leaves open after a dropped
  connection are closed by ``_sdk.close_quietly``.
"""

from ._locks import MAX_CONCURRENT_RENEWALS, lock_scope
from ._mapping import ATTEMPT_PROPERTY, to_incoming, to_message
from ._receiving import MAX_PENDING_SETTLEMENTS
from .adapter import (
    DEAD_LETTER_SUFFIX,
    DEFAULT_MAX_LOCK_RENEWAL,
    DEFAULT_RECEIVE_WAIT,
    DEFAULT_SOCKET_TIMEOUT,
    ServiceBusAdapter,
)

__all__ = [
    "ATTEMPT_PROPERTY",
    "DEAD_LETTER_SUFFIX",
    "DEFAULT_MAX_LOCK_RENEWAL",
    "DEFAULT_RECEIVE_WAIT",
    "DEFAULT_SOCKET_TIMEOUT",
    "MAX_CONCURRENT_RENEWALS",
    "MAX_PENDING_SETTLEMENTS",
    "ServiceBusAdapter",
    "lock_scope",
    "to_incoming",
    "to_message",
]
