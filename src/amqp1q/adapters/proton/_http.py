"""A minimal asyncio HTTP/1.0 JSON client, for RabbitMQ's management API from inside the event
loop (``_rabbitmq_inspect``): one request per connection, ``Connection: close``, the body read to
the end. No dependency and no thread; it speaks only what that API needs (plain HTTP to a
management listener, Basic authentication, JSON both ways).
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from typing import Any, Final

from ..._errors import ConnectFailed, UnsupportedFeature

__all__ = ["HttpError", "JsonClient"]

MAX_RESPONSE: Final = 64 * 1024 * 1024


class HttpError(Exception):
    """A response with a status of 400 or more."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text[:300]}")
        self.status = status


class JsonClient:
    """``await client.call("GET", "/api/...")`` -> the decoded JSON (None for an empty body)."""

    def __init__(self, base: str, authorization: str, *, display: str, timeout: float) -> None:
        parts = urllib.parse.urlsplit(base)
        if parts.scheme != "http" or not parts.hostname:
            raise UnsupportedFeature(f"only http:// management URLs are supported, not {display}")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._authorization = authorization
        self._display = display
        self._timeout = timeout

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            return await asyncio.wait_for(self._call(method, path, body), self._timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise ConnectFailed(
                f"cannot reach RabbitMQ's management API at {self._display}: "
                f"{exc or type(exc).__name__} (is the rabbitmq_management plugin enabled?)"
            ) from None

    async def _call(self, method: str, path: str, body: Any) -> Any:
        data = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.0\r\nHost: {self._host}:{self._port}\r\n"
            f"Authorization: {self._authorization}\r\nConnection: close\r\n"
        )
        if data:  # (a DELETE with a content type is answered 406 by RabbitMQ)
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        head += "\r\n"
        reader, writer = await asyncio.open_connection(self._host, self._port)
        try:
            writer.write(head.encode("latin-1") + data)
            await writer.drain()
            raw = await reader.read(MAX_RESPONSE)
            while True:
                more = await reader.read(MAX_RESPONSE)
                if not more:
                    break
                raw += more
        finally:
            writer.close()
        header, _, payload = raw.partition(b"\r\n\r\n")
        status_line = header.split(b"\r\n", 1)[0].decode("latin-1")
        try:
            status = int(status_line.split()[1])
        except (IndexError, ValueError):
            raise HttpError(0, f"not an HTTP response: {status_line!r}") from None
        if b"transfer-encoding: chunked" in header.lower():
            payload = _unchunk(payload)
        text = payload.decode("utf-8", "replace")
        if status >= 400:
            raise HttpError(status, text)
        return json.loads(text) if text.strip() else None


def _unchunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)
