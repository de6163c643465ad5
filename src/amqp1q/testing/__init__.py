"""Testing with amqp1q: an embedded AMQP 1.0 broker and a pytest plugin.

- :class:`Broker`: an AMQP 1.0 broker in the running event loop (``async with Broker() as b``),
  with queues by address, topics and subscriptions, the anonymous relay, priorities, scheduled
  delivery, dead-letter queues, peek-lock, dynamic nodes (a temporary queue for a receiver
  attached with ``dynamic=true``, deleted with its link) and fault injection. ``amqp1q
  broker`` runs one from the shell.
- ``pytest_plugins = ["amqp1q.testing.pytest_plugin"]`` gives a ``amqp1q_broker`` fixture.
"""

from ._broker import Broker
from ._proxy import FaultProxy
from ._store import DEAD_LETTER_SUFFIX, BrokerQueue, Stored

__all__ = ["DEAD_LETTER_SUFFIX", "Broker", "BrokerQueue", "FaultProxy", "Stored"]
