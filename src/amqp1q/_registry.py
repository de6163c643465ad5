"""The handler registry: handlers by job name, their typing, and how each is called.

A :class:`Registry` maps job names to handlers: ``async def`` ones, run on the event loop, or
plain ``def`` ones, run in a worker thread by the worker (``_sync_handlers``); either takes the
job, or the job and a typed payload (``_signature``, ``_typed``). It also holds the middleware
run around every job (``_middleware``). Running them is the worker's job (``worker.py``), which
re-exports the registry and the handler types: ``amqp1q.Registry`` and
``amqp1q.worker.Registry`` are this class.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar, overload

from ._errors import InvalidSetting
from ._middleware import Middleware, check_middleware
from ._received import ReceivedJob
from ._signature import Signature

__all__ = [
    "AsyncHandler",
    "AsyncHandlerT",
    "Handler",
    "HandlerDecorator",
    "Registry",
    "SyncHandler",
    "SyncHandlerT",
]

#: ``async def handler(job) -> None``, or ``async def handler(job, payload: T) -> None`` with a
#: typed payload. What it returns is the reply to a request (``queue.call()``); else ignored.
AsyncHandler = (
    Callable[[ReceivedJob], Awaitable[Any]] | Callable[[ReceivedJob, Any], Awaitable[Any]]
)
#: ``def handler(job) -> None``, or ``def handler(job, payload: T) -> None``: run in a worker
#: thread.
SyncHandler = Callable[[ReceivedJob], Any] | Callable[[ReceivedJob, Any], Any]
Handler = AsyncHandler | SyncHandler
M = TypeVar("M", bound=Middleware)
AsyncHandlerT = TypeVar("AsyncHandlerT", bound=AsyncHandler)
SyncHandlerT = TypeVar("SyncHandlerT", bound=SyncHandler)


class HandlerDecorator(Protocol):
    """What ``@registry.handler(name)`` returns: takes an async or a sync handler."""

    @overload
    def __call__(self, func: AsyncHandlerT, /) -> AsyncHandlerT: ...
    @overload
    def __call__(self, func: SyncHandlerT, /) -> SyncHandlerT: ...


class Registry:
    """Handlers by job name, filled with decorators::

    registry = Registry()

    @registry.handler("send_email")
    async def send_email(job: ReceivedJob) -> None: ...

    @registry.handler("resize_image")  # a plain def runs in a worker thread
    def resize_image(job: ReceivedJob) -> None: ...

    @registry.default  # optional: jobs whose name has no handler
    async def unknown(job: ReceivedJob) -> None: ...

    A handler (async or sync) taking a second parameter gets the payload checked against its
    annotation and built as that type (an attrs class, a dataclass, a ``TypedDict``, a pydantic
    model, ``bytes`` or a JSON type); a payload that does not fit dead-letters the job at once.

    ``middleware`` (or :meth:`add_middleware`) runs around every job: ``async def mw(job,
    call_next)``; the first registered is the outermost.
    """

    def __init__(self, *, middleware: Iterable[Middleware] = ()) -> None:
        self._handlers: dict[str, Handler] = {}
        self._default: Handler | None = None
        self._signatures: dict[str | None, Signature] = {}
        self._middleware = check_middleware(middleware)

    @property
    def handlers(self) -> Mapping[str, Handler]:
        """The handlers by job name (read-only)."""
        return types.MappingProxyType(self._handlers)

    @property
    def default_handler(self) -> Handler | None:
        return self._default

    def handler(self, name: str) -> HandlerDecorator:
        """Register the decorated handler for jobs named ``name`` (once per name): an
        ``async def``, or a plain ``def`` (run in a worker thread)."""
        if not isinstance(name, str) or not name:
            raise InvalidSetting(f"a handler's job name must be a non-empty str, got {name!r}")

        def register(func: Any) -> Any:
            self.add(name, func)
            return func

        return register

    @overload
    def add(self, name: str, func: AsyncHandler) -> None: ...
    @overload
    def add(self, name: str, func: SyncHandler) -> None: ...

    def add(self, name: str, func: Handler) -> None:
        """Register ``func`` (``async def`` or ``def``) for jobs named ``name``, without a
        decorator."""
        if name in self._handlers:
            raise InvalidSetting(f"job name {name!r} already has a handler")
        _check_callable(func)
        self._signatures[name] = Signature.of(func)
        self._handlers[name] = func

    @overload
    def default(self, func: AsyncHandlerT) -> AsyncHandlerT: ...
    @overload
    def default(self, func: SyncHandlerT) -> SyncHandlerT: ...

    def default(self, func: Handler) -> Handler:
        """Register the decorated handler (``async def`` or ``def``) for jobs no other handler
        takes."""
        if self._default is not None:
            raise InvalidSetting("the registry already has a default handler")
        _check_callable(func)
        self._signatures[None] = Signature.of(func)
        self._default = func
        return func

    @property
    def middleware(self) -> tuple[Middleware, ...]:
        """The middleware run around every job, outermost first."""
        return self._middleware

    def add_middleware(self, middleware: M) -> M:
        """Run ``middleware`` around every job, inside those added before it (a decorator too)."""
        self._middleware = (*self._middleware, *check_middleware([middleware]))
        return middleware

    def arguments(self, name: str, job: ReceivedJob) -> tuple[Any, ...]:
        """The arguments the worker passes to ``name``'s handler for ``job``: the job, or its
        payload as the handler's declared type (checked here: a bad payload raises
        :class:`~amqp1q.PayloadValidationError`)."""
        signature = self._signatures.get(name if name in self._handlers else None)
        return signature.arguments(job) if signature is not None else (job,)

    def resolve(self, name: str) -> Handler | None:
        """The handler for ``name``: its own, else the default, else ``None``."""
        return self._handlers.get(name, self._default)

    def __repr__(self) -> str:
        default = " +default" if self._default is not None else ""
        return f"<Registry {sorted(self._handlers)}{default}>"


def _check_callable(func: object) -> None:
    if not callable(func):
        raise InvalidSetting(f"a handler must be callable, got {func!r}")
