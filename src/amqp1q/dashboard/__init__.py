"""``amqp1q dashboard``: a small local web page to operate queues (``pip install
"amqp1q[dashboard]"``, which brings aiohttp).

One row per queue -- depth, dead-lettered, consume and ack rates over the last minutes as
sparklines, the oldest job's age -- refreshed every few seconds; a dead-letter browser with
reasons, and replay and purge behind a confirm step. Server-rendered HTML with a few lines of
JavaScript, no build step. It listens on 127.0.0.1 unless told otherwise, and with a token
asks every request for it.

Rates come from the dashboard's own samples: every ``interval`` seconds it reads each queue's
``depth()``, and a rate is the change of the broker's running totals (``delivered``,
``acked``: RabbitMQ's ``message_stats``, the embedded and memory brokers' counts) between two
samples. Where the broker keeps no totals (Service Bus) the rates show as unknown and the
sparkline draws the ready count instead.
"""

from __future__ import annotations

from .._errors import MissingDependency

try:
    import aiohttp.web  # noqa: F401
except ImportError:  # pragma: no cover - exercised by a test that hides aiohttp
    raise MissingDependency(
        'the dashboard needs aiohttp: pip install "amqp1q[dashboard]"'
    ) from None

from ._app import Dashboard, make_app
from ._sampler import Sampler

__all__ = ["Dashboard", "Sampler", "make_app"]
