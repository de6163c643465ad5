"""Declare what amqp1q needs on RabbitMQ 3.x, through the management plugin's HTTP API.

RabbitMQ 3.x's AMQP 1.0 plugin cannot declare a queue with arguments, so a job queue with
priorities, its dead-letter queue and the delay exchanges are declared here instead (once,
at deploy time, or by ``amqp1q setup-rabbitmq``):

- ``QUEUE``: durable, ``x-max-priority`` (10 by default) so job priorities are honoured, and
  with ``single_active_consumer`` ``x-single-active-consumer``: one consumer at a time gets
  its jobs, the others wait their turn -- what ``consume(groups=N)`` needs (docs/ordering.md);
- ``QUEUE.dlq``: where dead-lettered jobs go (amqp1q re-publishes them there, with the reason);
- exchanges and queues ``amqp1q.delay.7`` ... ``amqp1q.delay.31``: a delayed job waits in the
  queue for its delay's power-of-two bucket, with a per-message TTL, and expires back to its
  queue through the default exchange;
- a topic (:meth:`RabbitMQManagement.setup_topic`): the ``topic`` exchange ``TOPIC`` and, per
  subscription ``S``, the job queue ``TOPIC.S`` (with ``TOPIC.S.dlq``) bound to it with ``#``:
  every job pushed to ``client.topic(TOPIC)`` is copied to each, and
  ``client.subscription(TOPIC, S)`` consumes one.

Everything is idempotent. The calls block (httpx's client, the optional extra
``amqp1q[rabbitmq]``; made once, not on the hot path): call them before starting the event loop,
or in a thread. An ``https://`` URL is verified against the system's CAs, or as ``tls=`` says
(a :class:`~amqp1q.TLSConfig`).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ..._errors import InvalidSetting
from ..._settings import TLSConfig
from ._brokers import (
    RABBITMQ_DELAY_EXCHANGE_PREFIX,
    RABBITMQ_DELAY_MAX_BUCKET,
    RABBITMQ_DELAY_MIN_BUCKET,
    SUBSCRIPTION_QUEUE_FORM,
)
from ._management_http import ManagementAPI, ManagementHTTPError, load_httpx

__all__ = ["DEFAULT_MANAGEMENT_URL", "RabbitMQManagement"]

DEFAULT_MANAGEMENT_URL: Final = "http://guest:guest@127.0.0.1:15672"
DEFAULT_MAX_PRIORITY: Final = 10


class RabbitMQManagement:
    """A small client of RabbitMQ's management HTTP API (``rabbitmq_management`` plugin)."""

    def __init__(
        self,
        url: str = DEFAULT_MANAGEMENT_URL,
        *,
        vhost: str = "/",
        timeout: float = 10.0,
        tls: TLSConfig | Mapping[str, Any] | bool | None = None,
    ) -> None:
        load_httpx()  # MissingDependency at once, naming the extra
        self._api = ManagementAPI.from_url(url, tls=TLSConfig.of(tls), timeout=timeout)
        self.vhost = vhost
        self._vhost = urllib.parse.quote(vhost, safe="")
        self.display = self._api.display

    # -- the job-queue set-up -------------------------------------------------------------------

    def setup_job_queue(
        self,
        queue: str,
        *,
        max_priority: int = DEFAULT_MAX_PRIORITY,
        single_active_consumer: bool = False,
    ) -> None:
        """Declare ``queue`` (with priorities; with one active consumer if asked) and
        ``queue.dlq``. RabbitMQ refuses to re-declare a queue with other arguments."""
        arguments: dict[str, Any] = {}
        if max_priority:
            arguments["x-max-priority"] = max_priority
        if single_active_consumer:
            arguments["x-single-active-consumer"] = True
        self.declare_queue(queue, arguments=arguments)
        self.declare_queue(f"{queue}.dlq")

    def setup_topic(
        self,
        topic: str,
        subscriptions: Iterable[str],
        *,
        max_priority: int = DEFAULT_MAX_PRIORITY,
        binding_key: str = "#",
    ) -> None:
        """Declare the ``topic`` exchange ``topic`` and, for each subscription, the job queue
        ``topic.SUBSCRIPTION`` (and its ``.dlq``) bound to it with ``binding_key``."""
        self.declare_exchange(topic, "topic")
        for subscription in subscriptions:
            queue = SUBSCRIPTION_QUEUE_FORM.format(topic=topic, subscription=subscription)
            self.setup_job_queue(queue, max_priority=max_priority)
            self.bind(topic, queue, binding_key)

    def setup_reply_queue(self, queue: str) -> None:
        """Declare ``queue``, a client's reply queue (``reply_queue=``): RabbitMQ 3.x has no
        dynamic nodes, so replies to ``queue.call()`` need one queue per client."""
        self.declare_queue(queue)

    def delete_exchange(self, name: str) -> None:
        self._call("DELETE", f"/exchanges/{self._vhost}/{_q(name)}", missing_ok=True)

    def connections(self) -> list[dict[str, Any]]:
        """The broker's connections (RabbitMQ 3.x lists an AMQP 1.0 connection once per
        session, each entry named by the client's address and port)."""
        result = self._call("GET", "/connections")
        return result if isinstance(result, list) else []

    def setup_delays(self) -> None:
        """Declare the delay buckets every delayed push and delayed retry goes through."""
        for bucket in range(RABBITMQ_DELAY_MIN_BUCKET, RABBITMQ_DELAY_MAX_BUCKET + 1):
            name = f"{RABBITMQ_DELAY_EXCHANGE_PREFIX}{bucket}"
            self.declare_exchange(name, "fanout")
            # No routing key of its own: an expired message keeps its key, the target queue.
            self.declare_queue(name, arguments={"x-dead-letter-exchange": ""})
            self.bind(name, name, "")

    # -- primitives -----------------------------------------------------------------------------

    def declare_queue(
        self, name: str, *, arguments: dict[str, Any] | None = None, durable: bool = True
    ) -> None:
        body = {"durable": durable, "auto_delete": False, "arguments": arguments or {}}
        self._call("PUT", f"/queues/{self._vhost}/{_q(name)}", body)

    def delete_queue(self, name: str) -> None:
        self._call("DELETE", f"/queues/{self._vhost}/{_q(name)}", missing_ok=True)

    def purge_queue(self, name: str) -> None:
        self._call("DELETE", f"/queues/{self._vhost}/{_q(name)}/contents", missing_ok=True)

    def declare_exchange(self, name: str, kind: str = "direct") -> None:
        body = {"type": kind, "durable": True, "auto_delete": False, "arguments": {}}
        self._call("PUT", f"/exchanges/{self._vhost}/{_q(name)}", body)

    def bind(self, exchange: str, queue: str, routing_key: str) -> None:
        path = f"/bindings/{self._vhost}/e/{_q(exchange)}/q/{_q(queue)}"
        self._call("POST", path, {"routing_key": routing_key, "arguments": {}})

    def queue_info(self, name: str) -> dict[str, Any] | None:
        result = self._call("GET", f"/queues/{self._vhost}/{_q(name)}", missing_ok=True)
        return result if isinstance(result, dict) else None

    def declare_vhost(self, name: str | None = None) -> None:
        """Create the virtual host ``name`` (default: this client's)."""
        self._call("PUT", f"/vhosts/{_q(name or self.vhost)}", {})

    def delete_vhost(self, name: str | None = None) -> None:
        """Delete the virtual host ``name`` (default: this client's) and all it holds."""
        self._call("DELETE", f"/vhosts/{_q(name or self.vhost)}", missing_ok=True)

    def grant(
        self, user: str, *, configure: str = ".*", write: str = ".*", read: str = ".*"
    ) -> None:
        """Give ``user`` permissions on this client's virtual host (all of them by default)."""
        body = {"configure": configure, "write": write, "read": read}
        self._call("PUT", f"/permissions/{self._vhost}/{_q(user)}", body)

    def overview(self) -> dict[str, Any]:
        result = self._call("GET", "/overview")
        return result if isinstance(result, dict) else {}

    def _call(self, method: str, path: str, body: Any = None, *, missing_ok: bool = False) -> Any:
        api = self._api
        try:
            with api.sync_client() as client:
                return api.result(client.request(**api.request(method, path, body)))
        except ManagementHTTPError as exc:
            if exc.status == 404 and missing_ok:
                return None
            if exc.status == 404 and "vhost_not_found" in exc.text:
                raise InvalidSetting(
                    f"RabbitMQ has no virtual host {self.vhost!r}: create it first "
                    f"(rabbitmqctl add_vhost {self.vhost}), and give the application's user "
                    f"permissions on it (rabbitmqctl set_permissions -p {self.vhost} USER "
                    "'.*' '.*' '.*')"
                ) from None
            raise InvalidSetting(f"RabbitMQ management API {method} {path}: {exc}") from None
        except api.errors() as exc:
            raise api.transport_error(exc) from None


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")
