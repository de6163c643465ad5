"""How a registered handler is called: ``handler(job)``, or ``handler(job, payload)`` typed.

A handler with one required positional parameter gets the job, as always. One with two gets the
job and its payload, checked against the second parameter's annotation and built as that type
(see ``_typed``): an attrs class, a dataclass, a ``TypedDict``, a pydantic model, ``bytes`` (the
raw body) or a JSON type; no annotation (or ``Any``) passes ``job.payload`` as it is. The
annotation is resolved, and the type compiled, when the handler is registered, so a type amqp1q
cannot check fails at import time with :class:`InvalidSetting`, not on the first job.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from . import _typed
from ._errors import InvalidSetting

if TYPE_CHECKING:
    from ._received import ReceivedJob

__all__ = ["Signature"]

_POSITIONAL: Final = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_NO_TYPE: Final = object()


class Signature:
    """What a handler takes: the job alone, or the job and a typed payload."""

    __slots__ = ("payload_type",)

    def __init__(self, payload_type: object = _NO_TYPE) -> None:
        #: The declared payload type, or ``_NO_TYPE`` for a handler that takes the job alone.
        self.payload_type = payload_type

    @property
    def typed(self) -> bool:
        return self.payload_type is not _NO_TYPE

    @classmethod
    def of(cls, func: Callable[..., Any]) -> Signature:
        """Read ``func``'s parameters. Raises :class:`InvalidSetting` for one amqp1q cannot
        call, or whose payload type it cannot check."""
        try:
            parameters = list(inspect.signature(func).parameters.values())
        except (TypeError, ValueError):  # no signature to read (a builtin): give it the job
            return _JOB_ONLY
        kinds = {parameter.kind for parameter in parameters}
        if inspect.Parameter.VAR_POSITIONAL in kinds:
            return _JOB_ONLY
        positional = [p for p in parameters if p.kind in _POSITIONAL]
        required = [p for p in positional if p.default is inspect.Parameter.empty]
        keyword_only = [
            p.name
            for p in parameters
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
        ]
        if keyword_only or not positional or len(required) > 2:
            raise InvalidSetting(
                f"a handler takes (job) or (job, payload); {_name(func)} takes "
                f"({', '.join(p.name for p in parameters)})"
            )
        if len(required) < 2:
            return _JOB_ONLY
        annotation = _resolve(func, required[1].annotation)
        if annotation is inspect.Parameter.empty or annotation is Any:
            return cls(Any)
        if annotation is not bytes:
            _typed.converter(annotation)  # compiled now: an unsupported type fails here
        return cls(annotation)

    def arguments(self, job: ReceivedJob) -> tuple[Any, ...]:
        """The handler's arguments for ``job``. Raises :class:`PayloadValidationError`."""
        if self.payload_type is _NO_TYPE:
            return (job,)
        if self.payload_type is Any:
            return (job, job.payload)
        return (job, _typed.build(self.payload_type, job))

    def __repr__(self) -> str:
        if not self.typed:
            return "Signature(job)"
        return f"Signature(job, payload: {_typed.type_name(self.payload_type)})"


_JOB_ONLY: Final = Signature()


def _name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


def _resolve(func: Callable[..., Any], annotation: object) -> object:
    """Evaluate a string annotation (``from __future__ import annotations``) where ``func`` was
    written. Only the payload's annotation is evaluated: the job's may name a type imported
    for type checkers only."""
    if not isinstance(annotation, str):
        return annotation
    target: Any = inspect.unwrap(func)
    while isinstance(target, functools.partial):
        target = inspect.unwrap(target.func)
    if not inspect.isfunction(target) and not inspect.ismethod(target):
        target = type(target).__call__  # a callable object
    namespace = getattr(inspect.unwrap(target), "__globals__", {})
    try:
        return eval(annotation, namespace)
    except Exception as exc:
        raise InvalidSetting(
            f"cannot resolve the payload annotation {annotation!r} of {_name(func)}: {exc} "
            "(define payload types at module level)"
        ) from None
