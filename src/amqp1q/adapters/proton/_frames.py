"""AMQP frame logging: every frame a client connection sends or receives, through ``logging``.

The switch is the ``amqp1q.frames`` logger: when it is enabled for DEBUG as a connection opens,
proton's frame trace (``PN_TRACE_FRM``'s output, which goes to stdout, untruncated) is routed
to it instead, one record per frame::

    logging.getLogger("amqp1q.frames").setLevel(logging.DEBUG)
    # 127.0.0.1:5672 0 -> @transfer(20) [handle=0x0, ...] \\x00Sp\\xc0...…(1031 bytes)

Each line is proton's text for the frame (channel, ``->`` sent or ``<-`` received, the
performative and its fields) made safe to keep:

- a transfer's payload (the encoded message) is cut to its first :data:`PAYLOAD_LIMIT` bytes,
  followed by ``…(N bytes)``; so is any binary field longer than that;
- the binary fields of SASL frames (PLAIN's initial response carries the password) are
  replaced by ``***``, whatever their length, even when proton cut the line short;
- what :func:`amqp1q._redact.redact` finds (URL passwords, ``SharedAccessKey=``, ``sig=``) is
  masked; proton's raw byte trace (``PN_TRACE_RAW``) is never logged.

With the logger off (the default) no tracer is installed: proton formats nothing and the cost is
one ``isEnabledFor`` check per connection opened.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Final

import proton

from ..._redact import MASK, redact

__all__ = ["PAYLOAD_LIMIT", "describe", "enabled", "trace_frames"]

log = logging.getLogger("amqp1q.frames")

#: Bytes of a payload or binary field kept in a logged frame.
PAYLOAD_LIMIT: Final = 64

#: "0 -> @open(16) [...]" (a performative) or "  -> AMQP" (a protocol header); after "FRAME: ".
_FRAME = re.compile(r"\s*(\d*)\s*(->|<-)\s*(.*)", re.DOTALL)
#: A quoted value as proton prints it: a binary (``b"..."``) or a string, each taken whole so
#: that a string ending in ``b`` is never read as a binary's start. Inside, '"' is written
#: ``\x22``; the closing quote is missing when proton cut the line short.
_QUOTED = re.compile(r'(b?)"([^"]*)("?)')
#: A quoted string (proton escapes '"' inside as \x22) or a bracket of the field list.
_TOKEN = re.compile(r'"[^"]*"?|[\[\]]')
#: After the field list: a payload's size in bytes, then the payload.
_PAYLOAD_SIZE = re.compile(r" \((\d+)\) ?")
#: One byte of proton's quoted text: an escape or a printable character.
_BYTE = re.compile(r"\\x[0-9a-fA-F]{2}|.", re.DOTALL)


def enabled() -> bool:
    """Whether a connection opened now logs its frames."""
    return log.isEnabledFor(logging.DEBUG)


def trace_frames(engine: Any, *, where: str, queue: str | None) -> None:
    """Route ``engine``'s proton frame trace to the ``amqp1q.frames`` logger.

    The tracer holds only ``where`` and ``queue``: proton keeps it on the transport, and a
    reference back to the engine would be a cycle the garbage collector cannot see through C.
    """
    extra = {"queue": queue}

    def tracer(_transport: Any, message: str) -> None:
        if not log.isEnabledFor(logging.DEBUG):  # switched off since the connection opened
            return
        try:
            line = describe(message)
        except Exception:  # never let a formatting bug escape into proton's C callback
            line = f"(a frame trace line of {len(message)} characters that could not be read)"
        if line is not None:
            log.debug("%s %s", where, line, extra=extra)

    # The Engine keeps its proton Transport to itself; tracing is the one use from outside.
    transport = engine.transport
    transport.trace(proton.Transport.TRACE_FRM)
    transport.tracer = tracer


def describe(message: str) -> str | None:
    """proton's trace line made safe to log; ``None`` for one never to log (raw bytes)."""
    level, colon, text = message.partition(":")
    level = level.strip() if colon else ""
    if level == "RAW":
        return None
    frame = _FRAME.match(text) if level == "FRAME" else None
    if frame is None:  # another kind of trace line (an error, say): logged as it is, made safe
        line = message.strip()
        return redact(_shorten_binaries(line, secret="sasl" in line.lower()))
    channel, direction, body = frame.groups()
    prefix = f"{channel} {direction}" if channel else direction
    if body.startswith("@sasl-"):
        return f"{prefix} {_shorten_binaries(body, secret=True)}"
    return redact(f"{prefix} {_shorten_payload(body)}")


def _shorten_payload(body: str) -> str:
    """``@transfer(20) [fields] (N) payload`` with the payload and long binaries cut."""
    end = _fields_end(body)
    if end is None:
        return _shorten_binaries(body, secret=False)
    head = _shorten_binaries(body[:end], secret=False)
    size = _PAYLOAD_SIZE.match(body, end)
    if size is None:
        return head + body[end:]
    count = int(size[1])
    payload = body[size.end() :]
    if count <= PAYLOAD_LIMIT:
        return f"{head} ({count}) {payload}"
    return f"{head} {_first_bytes(payload)}…({count} bytes)"


def _fields_end(body: str) -> int | None:
    """Where the performative's field list ends (after its ``]``), or ``None``."""
    depth = 0
    for token in _TOKEN.finditer(body):
        mark = token[0]
        if mark == "[":
            depth += 1
        elif mark == "]":
            depth -= 1
            if depth == 0:
                return token.end()
    return None


def _shorten_binaries(text: str, *, secret: bool) -> str:
    def shorten(match: re.Match[str]) -> str:
        binary, value, closed = match.groups()
        if not binary:
            return match[0]
        if secret:
            return MASK
        cut = _first_bytes(value)
        if cut == value:
            return match[0]
        count = sum(1 for _ in _BYTE.finditer(value))
        return f'b"{cut}"…({count} bytes{"" if closed else " or more"})'

    return _QUOTED.sub(shorten, text)


def _first_bytes(escaped: str) -> str:
    """The first :data:`PAYLOAD_LIMIT` bytes of proton's quoted text."""
    end = 0
    for count, byte in enumerate(_BYTE.finditer(escaped), 1):
        end = byte.end()
        if count == PAYLOAD_LIMIT:
            break
    return escaped[:end]
