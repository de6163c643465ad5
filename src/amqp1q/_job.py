"""The job model: :class:`Job` (what you push), :class:`Headers`, :class:`Receipt`.

A job's payload is serialised once, when the :class:`Job` is created, so a payload that cannot be
sent fails at the line that made it, and a push does no serialising work of its own.
"""

from __future__ import annotations

import datetime
import math
import os
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, Final

import attrs

from ._errors import InvalidJob, UnsupportedFeature
from ._payload import encode_payload

__all__ = [
    "RESERVED_HEADER_PREFIX",
    "Headers",
    "Job",
    "Receipt",
    "new_job_id",
    "trusted_headers",
    "with_headers",
]

#: Application-property names that start with this are amqp1q's own, not user headers.
RESERVED_HEADER_PREFIX: Final = "x-amqp1q-"
MAX_ID_LENGTH: Final = 128
MAX_PRIORITY: Final = 255
#: The longest group a job may have: Service Bus's SessionId limit.
MAX_GROUP_LENGTH: Final = 128


def new_job_id() -> str:
    """A fresh job id: a random (version 4) UUID in its 36-character text form."""
    try:
        return _ids.popleft()  # (atomic: threads never share one)
    except IndexError:
        _ids.extend(_uuid4_texts(_ID_BATCH))
        return _ids.popleft()


#: Ids made at a time, from one read of the OS's random source (not one each: a system call).
_ID_BATCH: Final = 256
_ids: deque[str] = deque()
if hasattr(os, "register_at_fork"):  # a forked child must not hand out its parent's ids
    os.register_at_fork(after_in_child=_ids.clear)


def _uuid4_texts(count: int) -> list[str]:
    """``count`` version-4 UUIDs as text, as ``str(uuid.uuid4())`` makes them."""
    pool = os.urandom(16 * count)
    texts = []
    for start in range(0, 16 * count, 16):
        h = pool[start : start + 16].hex()
        variant = "89ab"[(pool[start + 8] >> 4) & 3]  # RFC 4122: the two top bits are 10
        texts.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}")
    return texts


class Headers(Mapping[str, str]):
    """An immutable mapping of header names to string values, carried with a job.

    Names are case-sensitive non-empty strings; values are strings. Names starting with
    ``x-amqp1q-`` are reserved for amqp1q itself.
    """

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[str, str] | None = None, /, **kwargs: str) -> None:
        items: dict[str, str] = {}
        if data:
            items.update(data)
        if kwargs:
            items.update(kwargs)
        for key, value in items.items():
            _check_header(key, value)
        self._data = items
        self._hash: int | None = None

    @classmethod
    def _trusted(cls, data: dict[str, str]) -> Headers:
        """Wrap ``data`` without copying or checking: for codecs that built it themselves."""
        self = cls.__new__(cls)
        self._data = data
        self._hash = None
        return self

    @classmethod
    def of(cls, value: Mapping[str, str] | None) -> Headers:
        """Convert a mapping (or ``None``) to :class:`Headers` (which pass as they are)."""
        if isinstance(value, Headers):
            return value
        if value is None:
            return _EMPTY
        if not isinstance(value, Mapping):
            raise InvalidJob(f"headers must be a mapping of str to str, not {type(value).__name__}")
        return cls(value)

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"Headers({self._data!r})"

    def with_(self, **updates: str) -> Headers:
        """A copy with ``updates`` applied."""
        return Headers(self._data, **updates)

    def to_dict(self) -> dict[str, str]:
        return dict(self._data)


def _encodable(text: str, what: str, encoding: str = "utf-8") -> None:
    """Text that cannot go on the wire (a lone surrogate; non-ASCII in a symbol) is refused
    here, when the job is made, not at push time."""
    try:
        text.encode(encoding)
    except UnicodeEncodeError as exc:
        raise InvalidJob(f"{what} {text!r} cannot be encoded as {encoding}: {exc.reason}") from None


def _check_header(key: object, value: object) -> None:
    if not isinstance(key, str) or not key:
        raise InvalidJob(f"header names must be non-empty str, got {key!r}")
    _encodable(key, "header name")
    if key.startswith(RESERVED_HEADER_PREFIX):
        raise InvalidJob(
            f"header {key!r}: names starting with {RESERVED_HEADER_PREFIX!r} are reserved"
        )
    if not isinstance(value, str):
        raise InvalidJob(f"header {key!r}: values must be str, not {type(value).__name__}")
    _encodable(value, f"header {key!r}: the value")


_EMPTY: Final = Headers()


def _to_headers(value: Mapping[str, str] | None) -> Headers:
    return Headers.of(value)


def _to_seconds(value: float | datetime.timedelta | None) -> float | None:
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return value


def _check_name(_: Any, __: Any, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidJob(f"a job name must be a non-empty str, got {value!r}")
    _encodable(value, "the job name")


def _check_id(_: Any, __: Any, value: str) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise InvalidJob(
            f"a job id must be a str of 1 to {MAX_ID_LENGTH} characters, got {value!r}"
        )
    _encodable(value, "the job id")


def _check_priority(_: Any, __: Any, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PRIORITY:
        raise InvalidJob(f"priority must be an int from 0 to {MAX_PRIORITY} or None, got {value!r}")


def _check_delay(_: Any, __: Any, value: float | None) -> None:
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise InvalidJob(f"delay must be a number of seconds >= 0 or None, got {value!r}")


def _check_ttl(_: Any, __: Any, value: float | None) -> None:
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InvalidJob(f"ttl must be a number of seconds > 0 or None, got {value!r}")


def _check_to(_: Any, __: Any, value: str | None) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value:
        raise InvalidJob(
            f"to must be a non-empty str (a queue or an address) or None, got {value!r}"
        )
    _encodable(value, "the destination (to)")


def _check_reply(_: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value:
        raise InvalidJob(f"{attribute.name} must be a non-empty str or None, got {value!r}")
    _encodable(value, f"the {attribute.name}")


def _check_group(_: Any, __: Any, value: str | None) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value or len(value) > MAX_GROUP_LENGTH:
        raise InvalidJob(
            f"a group must be a str of 1 to {MAX_GROUP_LENGTH} characters or None, got {value!r}"
        )
    _encodable(value, "the group")


def _check_bool(_: Any, attribute: attrs.Attribute[Any], value: bool) -> None:
    if not isinstance(value, bool):
        raise InvalidJob(f"{attribute.name} must be a bool, got {value!r}")


@attrs.frozen(slots=True, repr=False)
class Job:
    """A job to push.

    ``Job(name, payload=None, *, headers=None, id=..., priority=None, delay=None, durable=True,
    content_type=None, to=None, group=None)``

    - ``payload``: ``bytes`` (sent as is) or any JSON-compatible value (sent as JSON).
    - ``headers``: a mapping of str to str, carried in the message's application-properties.
    - ``id``: defaults to a fresh UUID; it becomes the message-id, so duplicates can be detected.
    - ``priority``: 0-255, higher first where the broker orders by priority; ``None`` takes the
      queue's default.
    - ``delay``: seconds (or a ``timedelta``) before the job may be delivered.
    - ``durable``: survive a broker restart (default ``True``).
    - ``ttl``: seconds (or a ``timedelta``) the job may wait to be consumed; after that the
      broker drops it (the AMQP header's ``ttl``; Service Bus's ``time_to_live``). A delayed
      job's time to live counts from when it is due.
    - ``to``: the queue (or address, verbatim when it starts with ``/``) this one job goes to,
      whatever queue pushes it: routed by the broker's anonymous relay (the AMQP ``to``
      property), where it has one; :class:`~amqp1q.UnsupportedFeature` elsewhere
      (docs/connections.md).
    - ``reply_to`` and ``correlation_id``: the AMQP properties of a request, for a caller that
      reads replies itself; :meth:`JobQueue.call <amqp1q.JobQueue.call>` sets both
      (docs/request-reply.md).
    - ``group``: the job's ordering key (1 to 128 characters): ``queue.consume(groups=N)``
      hands out the jobs of one group in push order, each once the one before is settled
      (docs/ordering.md). It travels as the AMQP ``group-id`` property, and as the SessionId
      on Service Bus.

    Raises :class:`~amqp1q.InvalidJob` (or its subclass :class:`~amqp1q.PayloadError`) at
    construction when any of these cannot be sent.
    """

    name: str = attrs.field(validator=_check_name)
    payload: Any = attrs.field(default=None, hash=False)
    headers: Headers = attrs.field(default=_EMPTY, converter=_to_headers, kw_only=True)
    id: str = attrs.field(factory=new_job_id, validator=_check_id, kw_only=True)
    priority: int | None = attrs.field(default=None, validator=_check_priority, kw_only=True)
    delay: float | None = attrs.field(
        default=None, converter=_to_seconds, validator=_check_delay, kw_only=True
    )
    durable: bool = attrs.field(default=True, validator=_check_bool, kw_only=True)
    content_type: str | None = attrs.field(default=None, kw_only=True)
    ttl: float | None = attrs.field(
        default=None, converter=_to_seconds, validator=_check_ttl, kw_only=True
    )
    to: str | None = attrs.field(default=None, validator=_check_to, kw_only=True)
    reply_to: str | None = attrs.field(default=None, validator=_check_reply, kw_only=True)
    correlation_id: str | None = attrs.field(default=None, validator=_check_reply, kw_only=True)
    group: str | None = attrs.field(default=None, validator=_check_group, kw_only=True)
    #: The serialised payload, as it goes on the wire.
    body: bytes = attrs.field(init=False, eq=False, hash=False)

    def __attrs_post_init__(self) -> None:
        if self.content_type is not None:
            if not isinstance(self.content_type, str):
                raise InvalidJob(f"content_type must be a str, got {self.content_type!r}")
            _encodable(self.content_type, "the content type", "ascii")  # an AMQP symbol
        body, content_type = encode_payload(self.payload, self.content_type)
        object.__setattr__(self, "body", body)
        object.__setattr__(self, "content_type", content_type)

    def __repr__(self) -> str:
        extra = ""
        if self.priority is not None:
            extra += f", priority={self.priority}"
        if self.delay:
            extra += f", delay={self.delay}"
        if self.ttl:
            extra += f", ttl={self.ttl}"
        if self.to is not None:
            extra += f", to={self.to!r}"
        if self.group is not None:
            extra += f", group={self.group!r}"
        return f"Job(name={self.name!r}, id={self.id!r}, {len(self.body)} bytes{extra})"

    def evolve(self, **changes: Any) -> Job:
        """A copy with ``changes`` applied (the id is kept unless changed)."""
        if "payload" in changes and "content_type" not in changes:
            changes["content_type"] = None
        return attrs.evolve(self, **changes)


_FIELDS: Final = tuple(field.name for field in attrs.fields(Job))


def with_headers(job: Job, extra: Mapping[str, str]) -> Job:
    """A copy of ``job`` with ``extra`` headers added, unchecked and not re-serialised: for
    headers amqp1q made itself (trace context), on the push path."""
    copy: Job = object.__new__(Job)
    for name in _FIELDS:
        object.__setattr__(copy, name, getattr(job, name))
    object.__setattr__(copy, "headers", Headers._trusted({**job.headers._data, **extra}))
    return copy


def trusted_headers(data: dict[str, str]) -> Headers:
    """``data`` as :class:`Headers`, not copied or checked: for a decoder that built it itself
    (names and values are text; the reserved names already taken out)."""
    return Headers._trusted(data)


@attrs.frozen(slots=True)
class Receipt:
    """What a successful push returns: the broker accepted the job."""

    job_id: str
    queue: str
    #: Service Bus sequence number of a scheduled job, where the broker reports one.
    sequence_number: int | None = None
    #: Set by the queue for a job pushed with a delay: what :meth:`cancel` calls.
    _canceller: Callable[[Receipt], Awaitable[bool]] | None = attrs.field(
        default=None, eq=False, repr=False, kw_only=True, alias="canceller"
    )

    @property
    def cancellable(self) -> bool:
        """True for a job pushed with a delay, through a queue that can cancel it."""
        return self._canceller is not None

    async def cancel(self) -> bool:
        """Cancel the scheduled job this receipt is for: True if it was cancelled, False if it
        was no longer scheduled (already delivered, or cancelled before).

        Raises :class:`~amqp1q.UnsupportedFeature` for a job pushed without a delay, and where
        the broker cannot take a scheduled job back (RabbitMQ's delay queues; see
        docs/operations.md).
        """
        if self._canceller is None:
            raise UnsupportedFeature(
                "only a job pushed with a delay can be cancelled",
                queue=self.queue,
                job_id=self.job_id,
            )
        return await self._canceller(self)
