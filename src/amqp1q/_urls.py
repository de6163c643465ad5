"""Parsing the three kinds of location ``JobQueue.from_url`` accepts.

- ``amqp://user:pass@host:5672/queue`` and ``amqps://...`` (default ports 5672 / 5671), with
  one query parameter, ``?vhost=NAME``, the broker's virtual host;
- Azure Service Bus connection strings, ``Endpoint=sb://NS.servicebus.windows.net/;
  SharedAccessKeyName=..;SharedAccessKey=..;EntityPath=QUEUE`` (also ``SharedAccessSignature=``
  and ``UseDevelopmentEmulator=true`` with an explicit port);
- ``memory://QUEUE`` or ``memory://NAMESPACE/QUEUE`` for the in-process adapter.

Every parse error is an :class:`~amqp1q.InvalidURL` whose message shows the input redacted.
"""

from __future__ import annotations

import urllib.parse
from typing import Final

import attrs

from ._errors import InvalidURL
from ._redact import Secret, redact

__all__ = [
    "AmqpEndpoint",
    "Endpoint",
    "MemoryEndpoint",
    "ServiceBusEndpoint",
    "parse_url",
]

AMQP_PORT: Final = 5672
AMQPS_PORT: Final = 5671
DEFAULT_MEMORY_NAMESPACE: Final = "default"


@attrs.frozen
class AmqpEndpoint:
    """An ``amqp://`` or ``amqps://`` URL, split. The password is a :class:`Secret`."""

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: Secret | None = None
    queue: str | None = None
    #: The broker's virtual host (``?vhost=NAME``); None: the broker's default.
    vhost: str | None = None

    @property
    def tls(self) -> bool:
        return self.scheme == "amqps"

    @property
    def display(self) -> str:
        """The URL with the password masked — safe for logs and errors."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = ""
        if self.username is not None:
            user = urllib.parse.quote(self.username, safe="")
            user += ":***@" if self.password is not None else "@"
        path = "/" + urllib.parse.quote(self.queue, safe="/$") if self.queue else ""
        query = "?vhost=" + urllib.parse.quote(self.vhost, safe="") if self.vhost else ""
        return f"{self.scheme}://{user}{host}:{self.port}{path}{query}"


@attrs.frozen
class ServiceBusEndpoint:
    """A Service Bus connection string, split. The key and signature are :class:`Secret`."""

    host: str
    port: int | None = None
    key_name: str | None = None
    key: Secret | None = None
    signature: Secret | None = None
    entity_path: str | None = None
    emulator: bool = False

    @property
    def queue(self) -> str | None:
        return self.entity_path

    @property
    def display(self) -> str:
        """The connection string with the key and signature masked."""
        host = self.host if self.port is None else f"{self.host}:{self.port}"
        parts = [f"Endpoint=sb://{host}/"]
        if self.key_name is not None:
            parts.append(f"SharedAccessKeyName={self.key_name}")
        if self.key is not None:
            parts.append("SharedAccessKey=***")
        if self.signature is not None:
            parts.append("SharedAccessSignature=***")
        if self.entity_path is not None:
            parts.append(f"EntityPath={self.entity_path}")
        if self.emulator:
            parts.append("UseDevelopmentEmulator=true")
        return ";".join(parts)


@attrs.frozen
class MemoryEndpoint:
    """A ``memory://`` URL: a namespace (queues are shared within it) and a queue."""

    namespace: str = DEFAULT_MEMORY_NAMESPACE
    queue: str | None = None

    @property
    def display(self) -> str:
        if self.namespace == DEFAULT_MEMORY_NAMESPACE:
            return f"memory://{self.queue or ''}"
        return f"memory://{self.namespace}/{self.queue or ''}"


Endpoint = AmqpEndpoint | ServiceBusEndpoint | MemoryEndpoint


def parse_url(url: str) -> Endpoint:
    """Parse ``url`` into an endpoint, or raise :class:`InvalidURL` naming the problem."""
    if not isinstance(url, str):
        raise InvalidURL(f"the URL must be a str, not {type(url).__name__}")
    text = url.strip()
    if not text:
        raise InvalidURL("the URL is empty")
    if _looks_like_connection_string(text):
        return _parse_connection_string(text)
    if any(ch.isspace() for ch in text):
        # Never echo it: a space inside the user-info would defeat redaction.
        raise InvalidURL("the URL contains whitespace")
    scheme, sep, _ = text.partition("://")
    if not sep:
        # Not echoed: without a scheme, redaction cannot tell a password from the rest.
        raise InvalidURL(
            "not a URL or a Service Bus connection string "
            "(expected amqp://, amqps://, memory:// or Endpoint=sb://...)"
        )
    scheme = scheme.lower()
    if scheme in ("amqp", "amqps"):
        return _parse_amqp(text)
    if scheme == "memory":
        return _parse_memory(text)
    raise InvalidURL(
        f"unknown URL scheme {scheme!r} in {redact(text)!r} "
        "(expected amqp, amqps, memory, or a Service Bus connection string)"
    )


def _parse_amqp(url: str) -> AmqpEndpoint:
    shown = redact(url)
    parts, port = _split(url, f"URL {shown!r}")
    host = parts.hostname
    if not host:
        raise InvalidURL(f"the URL {shown!r} names no host")
    vhost = _query_vhost(parts.query, shown)
    if parts.fragment:
        raise InvalidURL(f"the URL {shown!r} has a fragment ('#...'), which amqp1q does not read")
    scheme = parts.scheme.lower()
    username = urllib.parse.unquote(parts.username) if parts.username is not None else None
    password = Secret(urllib.parse.unquote(parts.password)) if parts.password is not None else None
    if "@" in parts.path:
        raise InvalidURL(
            f"malformed URL {shown!r}: '@' after the host — percent-encode '@' and '/' in the "
            "user name and password (%40, %2F)"
        )
    path = urllib.parse.unquote(parts.path)
    queue = path[1:] if path.startswith("/") else path
    return AmqpEndpoint(
        scheme=scheme,
        host=host,
        port=port if port is not None else (AMQPS_PORT if scheme == "amqps" else AMQP_PORT),
        username=username,
        password=password,
        queue=queue or None,
        vhost=vhost,
    )


def _split(url: str, what: str) -> tuple[urllib.parse.SplitResult, int | None]:
    """``url`` split, and its port; InvalidURL("malformed {what}: ...") if it cannot be."""
    try:
        parts = urllib.parse.urlsplit(url)
        return parts, parts.port
    except ValueError as exc:
        raise InvalidURL(f"malformed {what}: {_scrub(exc)}") from None


#: The query parameters an ``amqp://`` URL may carry.
AMQP_QUERY: Final = ("vhost",)


def _query_vhost(query: str, shown: str) -> str | None:
    """``?vhost=NAME`` (percent-decoded), the one query parameter read; others are refused."""
    if not query:
        return None
    try:
        fields = urllib.parse.parse_qs(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise InvalidURL(f"malformed query in the URL {shown!r}: expected ?vhost=NAME") from None
    unknown = sorted(set(fields) - set(AMQP_QUERY))
    if unknown:
        raise InvalidURL(
            f"the URL {shown!r} has query parameters amqp1q does not read ({', '.join(unknown)}); "
            "?vhost=NAME is the one it takes: pass other settings as keyword arguments to "
            "JobQueue.from_url"
        )
    values = fields["vhost"]
    if len(values) > 1:
        raise InvalidURL(f"the URL {shown!r} gives vhost more than once")
    if not values[0]:
        raise InvalidURL(f"the URL {shown!r} has an empty vhost (the default is '/')")
    return values[0]


def _parse_memory(url: str) -> MemoryEndpoint:
    shown = redact(url)
    rest = url.partition("://")[2]
    if "@" in rest or "?" in rest or "#" in rest:
        raise InvalidURL(
            f"malformed memory URL {shown!r}: expected memory://QUEUE or memory://NAMESPACE/QUEUE"
        )
    head, slash, tail = rest.partition("/")
    if not slash:
        return MemoryEndpoint(queue=urllib.parse.unquote(head) or None)
    namespace = urllib.parse.unquote(head) or DEFAULT_MEMORY_NAMESPACE
    return MemoryEndpoint(namespace=namespace, queue=urllib.parse.unquote(tail) or None)


# -- Service Bus connection strings ----------------------------------------------------------

_SB_KEYS: Final = {
    "endpoint",
    "sharedaccesskeyname",
    "sharedaccesskey",
    "sharedaccesssignature",
    "entitypath",
    "usedevelopmentemulator",
}


def _looks_like_connection_string(text: str) -> bool:
    key, eq, _ = text.split(";", 1)[0].partition("=")
    return bool(eq) and key.strip().lower() in _SB_KEYS


def _parse_connection_string(text: str) -> ServiceBusEndpoint:
    """A Service Bus connection string, checked for everything azure-servicebus 7.15 refuses
    (its ``_parse_conn_str``: KEY=VALUE items, an Endpoint with a host, a key name with its
    key, a key or a signature, not both), so that a bad one fails here with an InvalidURL
    naming the part that is wrong, not later inside the SDK."""
    shown = redact(text)
    fields: dict[str, str] = {}
    for raw in text.split(";"):
        item = raw.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise InvalidURL(
                f"malformed Service Bus connection string {shown!r}: "
                f"expected KEY=VALUE, found {redact(key)!r}"
            )
        name = key.strip().lower()
        if name not in _SB_KEYS:
            raise InvalidURL(
                f"malformed Service Bus connection string {shown!r}: unknown key {key.strip()!r}"
            )
        if name in fields:
            raise InvalidURL(
                f"malformed Service Bus connection string {shown!r}: {key.strip()!r} is given twice"
            )
        if not value.strip():
            raise InvalidURL(
                f"the Service Bus connection string {shown!r} gives {key.strip()} no value"
            )
        fields[name] = value.strip()

    endpoint = fields.get("endpoint")
    if not endpoint:
        raise InvalidURL(f"the Service Bus connection string {shown!r} has no Endpoint")
    parts, port = _split(endpoint, f"Endpoint in {shown!r}")
    host = parts.hostname
    if parts.scheme.lower() != "sb" or not host:
        raise InvalidURL(
            f"the Endpoint in {shown!r} must look like sb://NAMESPACE.servicebus.windows.net/"
        )

    emulator_flag = fields.get("usedevelopmentemulator", "false").lower()
    if emulator_flag not in ("true", "false"):
        raise InvalidURL(f"UseDevelopmentEmulator must be true or false in {shown!r}")
    key_name = fields.get("sharedaccesskeyname")
    access_key = fields.get("sharedaccesskey")
    signature = fields.get("sharedaccesssignature")
    if (key_name is None) != (access_key is None):
        given, missing = (
            ("SharedAccessKeyName", "SharedAccessKey")
            if access_key is None
            else ("SharedAccessKey", "SharedAccessKeyName")
        )
        raise InvalidURL(
            f"the Service Bus connection string {shown!r} has a {given} but no {missing}: "
            "it needs both SharedAccessKeyName and SharedAccessKey, or neither"
        )
    if signature is not None and access_key is not None:
        raise InvalidURL(
            f"the Service Bus connection string {shown!r} has both a SharedAccessKey and a "
            "SharedAccessSignature; give one"
        )
    if signature is None and access_key is None:
        raise InvalidURL(
            f"the Service Bus connection string {shown!r} has no credentials: add "
            "SharedAccessKeyName=...;SharedAccessKey=... or SharedAccessSignature=... (the "
            "emulator's connection string has a key too); for Azure AD use "
            "ServiceBusAdapter.from_credential"
        )
    return ServiceBusEndpoint(
        host=host,
        port=port,
        key_name=key_name,
        key=Secret(access_key) if access_key is not None else None,
        signature=Secret(signature) if signature is not None else None,
        entity_path=fields.get("entitypath"),
        emulator=emulator_flag == "true",
    )


def _scrub(exc: BaseException) -> str:
    return redact(str(exc))
