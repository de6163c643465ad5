"""The error tree: one root, context in messages, pickling, builtin bases."""

from __future__ import annotations

import inspect
import pickle

import pytest

import amqp1q
from amqp1q import _errors


def _error_classes() -> list[type[amqp1q.Amqp1qError]]:
    return [
        obj
        for _, obj in inspect.getmembers(_errors, inspect.isclass)
        if issubclass(obj, amqp1q.Amqp1qError)
    ]


def test_every_error_derives_from_the_root_and_is_exported() -> None:
    classes = _error_classes()
    assert len(classes) == 27
    for cls in classes:
        assert issubclass(cls, amqp1q.Amqp1qError)
        assert getattr(amqp1q, cls.__name__) is cls


def test_the_tree_in_the_docstring_names_every_error() -> None:
    doc = _errors.__doc__ or ""
    for cls in _error_classes():
        assert cls.__name__ in doc, cls.__name__


def test_builtin_bases() -> None:
    assert issubclass(amqp1q.ConnectionLost, ConnectionError)
    assert issubclass(amqp1q.InvalidURL, ValueError)
    assert issubclass(amqp1q.PayloadError, ValueError)
    assert issubclass(amqp1q.PushTimeout, TimeoutError)
    assert issubclass(amqp1q.CallTimeout, TimeoutError)
    assert issubclass(amqp1q.JobFailed, amqp1q.CallError)
    assert issubclass(amqp1q.MissingDependency, ImportError)
    assert issubclass(amqp1q.MissingDependency, amqp1q.ConfigurationError)


def test_context_is_carried_and_rendered() -> None:
    err = amqp1q.QueueNotFound(
        "no such queue",
        queue="jobs",
        address="/amq/queue/jobs",
        condition="amqp:not-found",
        description="no queue 'jobs' in vhost '/'",
    )
    assert (err.queue, err.address, err.condition) == ("jobs", "/amq/queue/jobs", "amqp:not-found")
    assert str(err) == (
        "no such queue (queue='jobs', address='/amq/queue/jobs', condition='amqp:not-found', "
        "description=\"no queue 'jobs' in vhost '/'\")"
    )


@pytest.mark.parametrize("cls", _error_classes())
def test_errors_pickle(cls: type[amqp1q.Amqp1qError]) -> None:
    err = cls("boom", queue="q", job_id="j")
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is cls
    assert (copy.message, copy.queue, copy.job_id, str(copy)) == ("boom", "q", "j", str(err))


def test_job_rejected_keeps_its_outcome() -> None:
    err = amqp1q.JobRejected("refused", outcome="released", queue="q")
    assert pickle.loads(pickle.dumps(err)).outcome == "released"


def test_payload_validation_error_keeps_its_type_and_errors() -> None:
    err = amqp1q.PayloadValidationError(
        "bad", payload_type="Email", errors=("to: missing",), queue="q", job_id="j"
    )
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.payload_type, copy.errors, copy.job_id) == ("Email", ("to: missing",), "j")
    assert isinstance(copy, amqp1q.PayloadError)


def test_job_failed_keeps_the_remote_error() -> None:
    err = amqp1q.JobFailed(
        "failed", error_type="ValueError", error_message="nope", queue="q", job_id="j"
    )
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.error_type, copy.error_message, copy.job_id) == ("ValueError", "nope", "j")
