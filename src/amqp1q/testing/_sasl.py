"""The server half of AMQP 1.0's SASL layer (section 5.3), sans-IO.

proton's server-side SASL without Cyrus offers no PLAIN, so the embedded broker speaks SASL
itself: feed it the client's bytes with :meth:`SaslServer.receive_data`, send what
:meth:`SaslServer.data_to_send` returns, and once :attr:`SaslServer.done` hand
:attr:`SaslServer.leftover` (the start of the AMQP layer) to a server :class:`Engine` made
with ``sasl=False``. Mechanisms: ANONYMOUS, PLAIN, and EXTERNAL over TLS with a verified
client certificate.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from ..adapters.proton.wire import AMQPDecodeError, Array, Described, UByte, ULong, decode, encode

__all__ = ["AMQP_HEADER", "SASL_HEADER", "SaslServer"]

SASL_HEADER: Final = b"AMQP\x03\x01\x00\x00"
AMQP_HEADER: Final = b"AMQP\x00\x01\x00\x00"
_MECHANISMS: Final = 0x40
_INIT: Final = 0x41
_OUTCOME: Final = 0x44
_OK: Final = 0
_AUTH: Final = 1
_MAX_FRAME: Final = 64 * 1024

#: Decides a PLAIN login: (user, password) -> accepted?
Authenticator = Callable[[str, str], bool]


class SaslServer:
    """One connection's SASL exchange, server side."""

    def __init__(
        self,
        *,
        anonymous: bool,
        authenticate: Authenticator | None,
        external_user: str | None = None,
    ) -> None:
        self._anonymous = anonymous
        self._authenticate = authenticate
        #: The identity TLS established (a verified client certificate): offers EXTERNAL.
        self._external_user = external_user
        self._input = bytearray()
        self._output = bytearray()
        self._header_seen = False
        #: True once the outcome is sent; :attr:`succeeded` says which.
        self.done = False
        self.succeeded = False
        #: The authenticated user (``None`` for ANONYMOUS).
        self.user: str | None = None
        #: Why the exchange failed, for the broker's log (never the password).
        self.failure: str | None = None
        self.leftover = b""

    @property
    def mechanisms(self) -> list[str]:
        out = []
        if self._external_user is not None:
            out.append("EXTERNAL")
        if self._authenticate is not None:
            out.append("PLAIN")
        if self._anonymous:
            out.append("ANONYMOUS")
        return out

    def receive_data(self, data: bytes) -> None:
        if self.done:
            self.leftover += data
            return
        self._input += data
        if not self._header_seen:
            if len(self._input) < 8:
                return
            header = bytes(self._input[:8])
            self._header_seen = True
            if header == AMQP_HEADER and self._anonymous:
                # No SASL at all (rhea without a user does this): anonymous, straight to AMQP.
                self.done = self.succeeded = True
                self.leftover = bytes(self._input)
                self._input.clear()
                return
            del self._input[:8]
            self._output += SASL_HEADER
            if header != SASL_HEADER:
                self.failure = f"protocol header {header!r} is not AMQP 1.0 with SASL"
                self.done = True
                return
            mechanisms = Array(0xA3, tuple(self.mechanisms))
            self._frame(_MECHANISMS, [mechanisms])
        self._read_init()

    def data_to_send(self) -> bytes:
        out = bytes(self._output)
        self._output.clear()
        return out

    def _read_init(self) -> None:
        if len(self._input) < 8:
            return
        (size,) = struct.unpack_from(">I", self._input)
        if size < 8 or size > _MAX_FRAME:
            self._fail(f"a SASL frame of {size} bytes")
            return
        if len(self._input) < size:
            return
        doff = self._input[4] * 4
        body = bytes(self._input[doff:size])
        rest = bytes(self._input[size:])
        self._input.clear()
        try:
            performative, _ = decode(body)
        except AMQPDecodeError as exc:
            self._fail(f"an undecodable SASL frame: {exc}")
            return
        if not isinstance(performative, Described) or performative.descriptor != _INIT:
            self._fail("the first SASL frame is not sasl-init")
            return
        fields = performative.value if isinstance(performative.value, list) else []
        mechanism = fields[0] if fields else None
        response = fields[1] if len(fields) > 1 and isinstance(fields[1], bytes) else b""
        if mechanism == "EXTERNAL" and self._external_user is not None:
            self._succeed(self._external_user, rest)
        elif mechanism == "ANONYMOUS" and self._anonymous:
            self._succeed(None, rest)
        elif mechanism == "PLAIN" and self._authenticate is not None:
            parts = response.split(b"\x00")
            if len(parts) != 3:
                self._fail("a malformed PLAIN response")
                return
            user = parts[1].decode("utf-8", "replace")
            password = parts[2].decode("utf-8", "replace")
            if self._authenticate(user, password):
                self._succeed(user, rest)
            else:
                self._fail(f"PLAIN login refused for user {user!r}")
        else:
            self._fail(f"mechanism {mechanism!r} is not offered")

    def _succeed(self, user: str | None, rest: bytes) -> None:
        self._frame(_OUTCOME, [UByte(_OK)])
        self.user = user
        self.done = self.succeeded = True
        self.leftover = rest

    def _fail(self, why: str) -> None:
        self._frame(_OUTCOME, [UByte(_AUTH)])
        self.failure = why
        self.done = True

    def _frame(self, code: int, fields: list[object]) -> None:
        body = encode(Described(ULong(code), fields))
        self._output += struct.pack(">IBBH", 8 + len(body), 2, 1, 0) + body
