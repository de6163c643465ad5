"""Virtual hosts, and what a missing queue's error tells the user to run.

- :func:`open_hostname`: the Open frame's ``hostname``. AMQP 1.0 makes it "the name of the
  host (either fully qualified or relative) to which the sending peer is connecting", and
  brokers read it as their virtual host: RabbitMQ (the 3.x ``rabbitmq_amqp1_0`` plugin and
  4.x alike) as ``vhost:NAME`` (anything else: its ``default_vhost``), Qpid Broker-J by the
  virtual host's name (or an alias of it).
- :func:`declare_hint`: on RabbitMQ, the ``amqp1q setup-rabbitmq`` command that declares what
  is missing at an address, for :class:`~amqp1q.QueueNotFound`'s message.
"""

from __future__ import annotations

import shlex
from typing import Final

from ._brokers import RABBITMQ_DELAY_EXCHANGE_PREFIX, BrokerProfile
from ._client import is_loopback

__all__ = ["declare_hint", "is_rabbitmq", "open_hostname"]

#: How RabbitMQ reads a virtual host from the Open frame's hostname.
VHOST_PREFIX: Final = "vhost:"


def open_hostname(host: str, vhost: str | None, broker: str | None) -> str:
    """The Open frame's hostname: the URL's ``host`` without a ``vhost``. With one,
    ``vhost:NAME`` (RabbitMQ's form), unless ``broker`` names a broker that is not RabbitMQ:
    then ``NAME`` itself."""
    if vhost is None:
        return host
    if vhost.startswith(VHOST_PREFIX):
        return vhost
    if broker is None or broker.lower().startswith("rabbitmq"):
        return VHOST_PREFIX + vhost
    return vhost


def is_rabbitmq(profile: BrokerProfile) -> bool:
    return profile.name.startswith("rabbitmq")


def declare_hint(
    profile: BrokerProfile | None, address: str, *, queue: str, vhost: str | None, host: str
) -> str:
    """`` (declare it with: amqp1q setup-rabbitmq --queue Q ...)`` for a missing ``address``
    on RabbitMQ (``queue`` is the job queue whose delay exchanges a delay address needs);
    ``""`` elsewhere, or for an address amqp1q does not declare."""
    if profile is None or not is_rabbitmq(profile):
        return ""
    command = "amqp1q setup-rabbitmq --queue "
    if address.startswith(profile.queue_prefix):
        name = address[len(profile.queue_prefix) :]
        if profile.dead_letter_suffix and name.endswith(profile.dead_letter_suffix):
            name = name[: -len(profile.dead_letter_suffix)]  # declared with its queue
        command += shlex.quote(name)
    elif RABBITMQ_DELAY_EXCHANGE_PREFIX in address:
        command += f"{shlex.quote(queue)} (it declares the delay exchanges)"
    else:
        return ""
    if vhost is not None and vhost not in ("/", "vhost:/"):
        command += f" --vhost {shlex.quote(vhost.removeprefix(VHOST_PREFIX))}"
    if not is_loopback(host):
        command += f" --management-url http://{f'[{host}]' if ':' in host else host}:15672"
    return f" (declare it with: {command})"
