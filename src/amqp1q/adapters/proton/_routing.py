"""Per-job routing on the Proton adapter: ``Job(to=...)`` through the anonymous relay.

A job with ``to`` goes out on the connection's *anonymous* sender (a link with no target) and
the broker routes it by the message's ``to`` property -- the AMQP 1.0 "anonymous relay", which
a broker that has it announces with ``ANONYMOUS-RELAY`` in its Open frame's
offered-capabilities (RabbitMQ 4.x, amqp1q's embedded broker; not RabbitMQ 3.x). ``to`` is a
queue name, mapped to the broker's address form as ``queue=`` is, or an address used verbatim
when it starts with ``/`` (``/exchanges/X/KEY`` on RabbitMQ 4.x).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ..._errors import UnsupportedFeature
from ..._job import Job
from ._shared_connection import ANONYMOUS_RELAY

if TYPE_CHECKING:
    from .adapter import ProtonAdapter

__all__ = ["RELAY", "relay_address"]

#: The sender key (and link target) of the anonymous sender: no address at all.
RELAY: Final = ""


def relay_address(adapter: ProtonAdapter, job: Job) -> str:
    """The address ``job.to`` names on this broker (raise UnsupportedFeature where the broker
    has no anonymous relay)."""
    to = job.to
    assert to is not None
    shared = adapter.shared
    if not shared.anonymous_relay:
        raise UnsupportedFeature(
            f"{adapter.profile.product} offers no anonymous relay ({ANONYMOUS_RELAY} is not "
            f"among its Open frame's offered capabilities), so a job cannot name its own "
            f"queue: push it through client.queue({to!r}) instead of Job(to=...)",
            queue=adapter.queue,
            job_id=job.id,
        )
    return to if to.startswith("/") else adapter.profile.queue_address(to)
