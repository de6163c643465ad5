"""RabbitMQ's management HTTP API through httpx (the optional extra ``amqp1q[rabbitmq]``): the
one place that makes the client -- base URL, Basic credentials, TLS, timeout -- and maps what
goes wrong onto amqp1q's errors, for the asynchronous operations (``_rabbitmq_inspect``) and the
blocking set-up (``rabbitmq_setup``) alike.

- An ``https://`` URL is verified as the given :class:`~amqp1q.TLSConfig` says (its CA bundle,
  client certificate, ``insecure_skip_verify`` and ``server_hostname``: the queue's own TLS
  settings, for the operations), else against the system's CAs.
- The credentials go in an ``Authorization`` header, never in the URL a request or an error
  shows.
- Nothing listening or a timeout: :class:`~amqp1q.ConnectFailed`; a handshake or certificate
  failure: :class:`~amqp1q.TLSError`; 401: :class:`~amqp1q.AuthenticationFailed` naming the
  user (never the password); any other status of 400 or more: :class:`ManagementHTTPError`,
  which the caller maps (a 404 is a missing queue to one, nothing to worry about to another).
"""

from __future__ import annotations

import json
import ssl
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

import attrs

from ..._errors import (
    Amqp1qError,
    AuthenticationFailed,
    ConnectFailed,
    InvalidSetting,
    MissingDependency,
    TLSError,
)
from ..._redact import Secret, redact
from ..._settings import TLSConfig
from ._tls import tls_context

if TYPE_CHECKING:
    import httpx

__all__ = ["DEFAULT_PORTS", "ManagementAPI", "ManagementHTTPError"]

#: The management plugin's usual ports: 15672 for plain HTTP, 15671 for HTTPS.
DEFAULT_PORTS: Final = {"http": 15672, "https": 15671}
_HINT: Final = "is the rabbitmq_management plugin enabled?"


class ManagementHTTPError(Exception):
    """A response with a status of 400 or more (other than 401), for the caller to map."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text[:300]}")
        self.status = status
        self.text = text


def load_httpx() -> Any:
    """``import httpx``, or :class:`~amqp1q.MissingDependency` naming the extra."""
    try:
        import httpx
    except ImportError:
        raise MissingDependency(
            "RabbitMQ's management API (setup-rabbitmq, depth, peek, purge) needs httpx: "
            'pip install "amqp1q[rabbitmq]"'
        ) from None
    return httpx


@attrs.frozen(slots=True)
class ManagementAPI:
    """Where the management API is and how to talk to it (no connection is held)."""

    base: str  #: ``scheme://host:port``, without credentials
    user: str
    password: Secret = attrs.field(repr=False)
    display: str  #: the URL as errors show it, password redacted
    https: bool
    verify: ssl.SSLContext  #: made once (httpx would load the CAs again for each client)
    sni_hostname: str | None
    timeout: float

    @classmethod
    def from_url(
        cls, url: str, *, tls: TLSConfig | None = None, timeout: float = 10.0
    ) -> ManagementAPI:
        """``http[s]://USER:PASSWORD@HOST[:PORT]`` (guest/guest when there are none)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise InvalidSetting(f"not a management URL: {redact(url)}")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        https = parts.scheme == "https"
        return cls(
            base=f"{parts.scheme}://{host}:{parts.port or DEFAULT_PORTS[parts.scheme]}",
            user=urllib.parse.unquote(parts.username or "guest"),
            password=Secret(urllib.parse.unquote(parts.password or "guest")),
            display=redact(url),
            https=https,
            verify=tls_context(tls) if https and tls is not None else ssl.create_default_context(),
            sni_hostname=tls.server_hostname if https and tls is not None else None,
            timeout=timeout,
        )

    # -- clients --------------------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        httpx = load_httpx()
        return {
            "base_url": self.base,
            "auth": httpx.BasicAuth(self.user, self.password.reveal()),
            "verify": self.verify,
            "timeout": self.timeout,
            "trust_env": False,  # no proxy or .netrc from the environment: the URL says it all
        }

    def async_client(self) -> httpx.AsyncClient:
        client: httpx.AsyncClient = load_httpx().AsyncClient(**self._settings())
        return client

    def sync_client(self) -> httpx.Client:
        client: httpx.Client = load_httpx().Client(**self._settings())
        return client

    def request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """The keyword arguments of ``client.request`` for one call."""
        kwargs: dict[str, Any] = {"method": method, "url": "/api" + path}
        if body is not None:  # (a DELETE with a content type is answered 406 by RabbitMQ)
            kwargs["content"] = json.dumps(body).encode()
            kwargs["headers"] = {"Content-Type": "application/json"}
        if self.sni_hostname:
            kwargs["extensions"] = {"sni_hostname": self.sni_hostname}
        return kwargs

    # -- outcomes -------------------------------------------------------------------------------

    def result(self, response: httpx.Response) -> Any:
        """The decoded JSON of a response (None for an empty body), or the error it is."""
        status = response.status_code
        if status == 401:
            raise AuthenticationFailed(
                f"RabbitMQ's management API at {self.display} refused the credentials of user "
                f"{self.user!r} (HTTP 401): check the user's password, and that it has the "
                "'management' tag or better"
            )
        text = response.text
        if status >= 400:
            raise ManagementHTTPError(status, text)
        return json.loads(text) if text.strip() else None

    def transport_error(self, exc: Exception) -> Amqp1qError:
        """What an httpx transport error is, in amqp1q's errors."""
        cause = _ssl_cause(exc)
        if cause is not None:
            return TLSError(
                f"TLS with RabbitMQ's management API at {self.display} failed: {cause} "
                "(the queue's tls= settings verify it: root_ca, insecure_skip_verify, "
                "server_hostname)"
            )
        httpx = load_httpx()
        if isinstance(exc, httpx.TimeoutException):
            reason = f"no answer within {self.timeout:g} s"
        elif isinstance(exc, httpx.RemoteProtocolError) and not self.https:
            reason = f"{exc} (an https:// port?)"
        else:
            reason = str(exc) or type(exc).__name__
        return ConnectFailed(
            f"cannot reach RabbitMQ's management API at {self.display}: {redact(reason)} ({_HINT})"
        )

    def errors(self) -> type[Exception]:
        """The exceptions :meth:`transport_error` maps (httpx wraps the socket's and ssl's)."""
        errors: type[Exception] = load_httpx().TransportError
        return errors


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
