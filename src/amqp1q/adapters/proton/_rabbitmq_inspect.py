"""Operating a queue on RabbitMQ (``JobQueue.depth()``, ``peek()``, ...) through its management
HTTP API -- the plugin ``amqp1q setup-rabbitmq`` already needs -- from the event loop (``_http``).

- depth: ``GET /api/queues/VHOST/Q`` (and ``Q.dlq``): ``messages_ready``,
  ``messages_unacknowledged`` (in flight), ``head_message_timestamp`` (the oldest job's
  creation time), and ``message_stats`` totals (``publish``, ``deliver``, ``ack``). RabbitMQ
  samples these every few seconds (``collect_statistics_interval``, 5 s by default), so
  ``exact`` is False. Delayed jobs wait in the shared ``amqp1q.delay.N`` queues, which do not
  say whose they are: ``scheduled`` is None.
- peek: ``POST /api/queues/VHOST/Q/get`` with ``ackmode: ack_requeue_true``: RabbitMQ takes the
  messages and puts them straight back in their place. Nothing is lost or reordered, and
  amqp1q counts attempts from its own header on RabbitMQ 3.x, but the broker does mark them
  ``redelivered`` (on a quorum queue that counts toward a delivery limit: peek a classic
  queue, as ``setup-rabbitmq`` declares). The AMQP 1.0 sections RabbitMQ 3.x keeps in
  ``x-amqp-1.0-*`` headers are put back together into the message amqp1q sent.
- purge: ``DELETE /api/queues/VHOST/Q/contents``.
- cancel: not possible -- a delayed job waits in a TTL queue, and RabbitMQ cannot take one
  message out of the middle of a queue (UnsupportedFeature).

The API's URL is ``$AMQP1Q_RABBITMQ_MANAGEMENT_URL`` when set (as for ``setup-rabbitmq``),
else ``http://USER:PASSWORD@HOST:15672`` from the queue's own URL.
"""

from __future__ import annotations

import base64
import datetime
import os
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

from ..._errors import QueueNotFound
from ..._inspection import PeekedJob, QueueDepth, unsupported
from ..._job import Receipt
from ..._redact import redact
from ._http import HttpError, JsonClient
from ._inspect import peeked

if TYPE_CHECKING:
    from .adapter import ProtonAdapter

__all__ = ["RabbitMQOperations", "rebuild_message"]

ENV_URL: Final = "AMQP1Q_RABBITMQ_MANAGEMENT_URL"
TIMEOUT: Final = 10.0
_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_NOT_UTF8: Final = "Not UTF-8, base64 is: "
#: The AMQP 1.0 sections RabbitMQ 3.x keeps in headers, in the order a message has them.
_SECTIONS: Final = (
    "x-amqp-1.0-header",
    "x-amqp-1.0-delivery-annotations",
    "x-amqp-1.0-message-annotations",
    "x-amqp-1.0-properties",
    "x-amqp-1.0-app-properties",
)


class RabbitMQOperations:
    """The :class:`~amqp1q._inspection.QueueOperations` of a RabbitMQ queue."""

    def __init__(self, adapter: ProtonAdapter) -> None:
        endpoint = adapter.endpoint
        options = adapter.options
        url = os.environ.get(ENV_URL)
        if not url:
            user = urllib.parse.quote(endpoint.username or "guest", safe="")
            secret = endpoint.password.reveal() if endpoint.password is not None else "guest"
            url = f"http://{user}:{urllib.parse.quote(secret, safe='')}@{endpoint.host}:15672"
        parts = urllib.parse.urlsplit(url)
        token = base64.b64encode(
            f"{urllib.parse.unquote(parts.username or 'guest')}:"
            f"{urllib.parse.unquote(parts.password or 'guest')}".encode()
        ).decode()
        base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}"
        self._client = JsonClient(base, f"Basic {token}", display=redact(url), timeout=TIMEOUT)
        self._vhost = urllib.parse.quote(options.vhost or "/", safe="")
        self._queue = adapter.queue
        self._dead = adapter.profile.dead_letter_queue(adapter.queue) or adapter.queue + ".dlq"
        self._product = adapter.profile.product

    def _path(self, queue: str, tail: str = "") -> str:
        return f"/api/queues/{self._vhost}/{urllib.parse.quote(queue, safe='')}{tail}"

    async def _call(self, method: str, queue: str, tail: str = "", body: Any = None) -> Any:
        try:
            return await self._client.call(method, self._path(queue, tail), body)
        except HttpError as exc:
            if exc.status == 404:
                raise QueueNotFound(
                    f"RabbitMQ has no queue {queue!r} in this virtual host", queue=queue
                ) from None
            raise unsupported(
                self._product, f"{method} {tail or 'a queue'}", queue, str(exc)
            ) from None

    async def depth(self) -> QueueDepth:
        info = await self._call("GET", self._queue)
        try:
            dead = await self._call("GET", self._dead)
        except QueueNotFound:
            dead = {}
        stats = info.get("message_stats") or {}
        head = info.get("head_message_timestamp")
        return QueueDepth(
            self._queue,
            ready=info.get("messages_ready"),
            scheduled=None,
            in_flight=info.get("messages_unacknowledged"),
            dead_lettered=dead.get("messages") if dead else 0,
            oldest_enqueued_at=_timestamp(head),
            published=stats.get("publish", 0),
            delivered=stats.get("deliver", 0) + stats.get("deliver_no_ack", 0),
            acked=stats.get("ack", 0),
            exact=False,
            source="rabbitmq-management",
        )

    async def peek(self, count: int, *, dead_letter: bool) -> list[PeekedJob]:
        queue = self._dead if dead_letter else self._queue
        request = {"count": count, "ackmode": "ack_requeue_true", "encoding": "base64"}
        request["truncate"] = 64 * 1024 * 1024
        found = await self._call("POST", queue, "/get", request)
        jobs = []
        for entry in found or []:
            job = peeked(rebuild_message(entry), dead_letter=dead_letter)
            jobs.append(job)
        return jobs

    async def purge(self, *, dead_letter: bool) -> int:
        queue = self._dead if dead_letter else self._queue
        info = await self._call("GET", queue)
        await self._call("DELETE", queue, "/contents")
        return int(info.get("messages_ready") or 0)

    async def cancel_scheduled(self, receipt: Receipt) -> bool:
        raise unsupported(
            self._product,
            "cancel a scheduled job",
            self._queue,
            "a delayed job waits in a shared TTL queue (amqp1q.delay.N), and RabbitMQ cannot "
            "take one message out of the middle of a queue; have the handler check whether "
            "the job is still wanted",
        )


def rebuild_message(entry: dict[str, Any]) -> bytes:
    """The AMQP 1.0 message RabbitMQ 3.x got, from a management ``get``: its ``x-amqp-1.0-*``
    headers hold the sections as they came, the payload is the data section's bytes."""
    properties = entry.get("properties") or {}
    headers = properties.get("headers") or {}
    out = bytearray()
    for name in _SECTIONS:
        value = headers.get(name)
        if isinstance(value, str):
            out += _section_bytes(value)
    body = entry.get("payload") or ""
    if entry.get("payload_encoding") == "base64":
        data = base64.b64decode(body)
    else:
        data = str(body).encode("utf-8")
    size = len(data)
    out += b"\x00\x53\x75" + (
        b"\xa0" + bytes([size]) if size < 256 else b"\xb0" + size.to_bytes(4, "big")
    )
    out += data
    return bytes(out)


def _section_bytes(value: str) -> bytes:
    if value.startswith(_NOT_UTF8):
        return base64.b64decode(value[len(_NOT_UTF8) :])
    return value.encode("utf-8")


def _timestamp(value: Any) -> datetime.datetime | None:
    if not isinstance(value, int) or value <= 0:
        return None
    # RabbitMQ 3.x carries an AMQP 1.0 creation-time (ms) as is; AMQP 0-9-1 stamps seconds.
    ms = value if value > 10**11 else value * 1000
    return _EPOCH + datetime.timedelta(milliseconds=ms)
