"""Payload <-> body bytes.

``bytes`` (and ``bytearray`` / ``memoryview``) travel as they are, typed
``application/octet-stream`` unless a content type is given. Anything else is JSON, compact and
UTF-8, typed ``application/json``; attrs, dataclass and pydantic instances (and enums) inside it
become JSON objects (and values) — the payload types a handler may declare (``_typed``). A
received body is decoded by its content type: JSON when it says JSON, ``bytes`` otherwise.
"""

from __future__ import annotations

import json
from typing import Any, Final

from ._errors import PayloadError
from ._typed import to_json

__all__ = ["JSON", "OCTET_STREAM", "decode_payload", "encode_payload"]

JSON: Final = "application/json"
OCTET_STREAM: Final = "application/octet-stream"

_encoder = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=to_json
)
_dumps = _encoder.encode
_loads = json.loads


def encode_payload(payload: Any, content_type: str | None) -> tuple[bytes, str]:
    """Serialise ``payload``; return ``(body, content_type)``. Raises :class:`PayloadError`."""
    if isinstance(payload, bytes):
        return payload, content_type or OCTET_STREAM
    if isinstance(payload, (bytearray, memoryview)):
        return bytes(payload), content_type or OCTET_STREAM
    if content_type is not None and not _is_json(content_type):
        raise PayloadError(
            f"content_type {content_type!r} needs a bytes payload, "
            f"not {type(payload).__name__}; only JSON payloads are serialised by amqp1q"
        )
    try:
        return _dumps(payload).encode("utf-8"), content_type or JSON
    except UnicodeEncodeError as exc:  # a lone surrogate in a string: not valid UTF-8
        raise PayloadError(f"the payload has text UTF-8 cannot encode: {exc.reason}") from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise PayloadError(
            f"the payload cannot be serialised as JSON: {exc} "
            "(pass bytes, or JSON-compatible values: dict, list, str, int, float, bool, None, "
            "and attrs, dataclass or pydantic instances)"
        ) from None


def decode_payload(body: bytes, content_type: str | None) -> Any:
    """Deserialise a received body. Raises :class:`PayloadError` for invalid JSON."""
    if content_type is None or not _is_json(content_type):
        return body
    try:
        return _loads(body)
    except (ValueError, RecursionError) as exc:
        raise PayloadError(
            f"the body is not valid JSON although typed {content_type!r}: {exc}"
        ) from None


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == JSON or media.endswith("+json")
