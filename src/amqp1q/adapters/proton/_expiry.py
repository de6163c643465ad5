"""A job's time to live (``Job(ttl=...)``) on the wire: the AMQP header's ``ttl``, in ms."""

from __future__ import annotations

import math

from ..._errors import UnsupportedFeature
from ..._job import Job
from ._brokers import BrokerProfile, DelayStyle

__all__ = ["expiry_ttl"]


def expiry_ttl(profile: BrokerProfile, job: Job, delay_ttl: int | None) -> int:
    """The header ttl (ms) for ``job``; ``delay_ttl`` is the one a delay plan set, if any.

    Where the broker delays by expiry (RabbitMQ's TTL queues) the header's ttl is the delay
    itself, so a job cannot have both; elsewhere the broker counts the time to live from when
    the job is due (Service Bus, Artemis, the embedded broker).
    """
    assert job.ttl is not None
    if delay_ttl is not None and profile.delay is DelayStyle.RABBITMQ_TTL_EXCHANGES:
        raise UnsupportedFeature(
            f"{profile.product} delays a job by its expiry, so a job cannot have both a delay "
            "and a ttl there",
            job_id=job.id,
        )
    return min(max(1, math.ceil(job.ttl * 1000)), 2**32 - 1)
