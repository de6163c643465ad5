"""``amqp1q.__all__`` is exactly the public names."""

from __future__ import annotations

import inspect

import amqp1q


def test_all_matches_the_public_names() -> None:
    public = {
        name
        for name, value in vars(amqp1q).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert set(amqp1q.__all__) - {"__version__"} == public
    assert len(amqp1q.__all__) == len(set(amqp1q.__all__))
    assert amqp1q.__all__ == sorted(amqp1q.__all__, key=lambda n: (n.startswith("_"), n))


def test_every_exported_name_resolves() -> None:
    for name in amqp1q.__all__:
        assert getattr(amqp1q, name) is not None


def test_the_design_contract_names_exist() -> None:
    from amqp1q import Job, JobQueue, RetryPolicy

    assert callable(JobQueue.from_url)
    for method in ("push", "push_many", "consume", "close", "dead_letter_queue", "stats"):
        assert callable(getattr(JobQueue, method))
    for method in ("ack", "retry", "release", "reject", "process"):
        assert callable(getattr(amqp1q.ReceivedJob, method))
    assert Job("x").name == "x"
    assert RetryPolicy().max_attempts == 5


def test_the_worker_module_exports_resolve() -> None:
    import amqp1q.worker

    assert {"Registry", "WorkerConfig", "run_worker", "serve"} <= set(amqp1q.worker.__all__)
    for name in amqp1q.worker.__all__:
        assert getattr(amqp1q.worker, name) is not None
    assert amqp1q.worker.Registry is amqp1q.Registry
