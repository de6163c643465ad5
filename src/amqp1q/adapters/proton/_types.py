"""The AMQP 1.0 type system (part 1 of the specification), encoded and decoded in pure Python.

Python values map to AMQP types as follows when encoding: ``None`` -> null, ``bool`` ->
boolean, ``int`` -> long (int64; ulong if it only fits unsigned), ``float`` -> double, ``str``
-> string, ``bytes`` -> binary, :class:`uuid.UUID` -> uuid, ``list``/``tuple`` -> list,
``dict`` -> map, :class:`datetime.datetime` -> timestamp. The wrapper classes below
(:class:`Symbol`, :class:`UByte`, ... :class:`Timestamp`, :class:`Described`, :class:`Array`)
choose any other type explicitly. Decoding returns the same wrappers for the types plain
Python cannot tell apart, so ``decode(encode(x)) == x`` for every value built from them.

No proton here: this module is what the codec (:mod:`._codec`) and the embedded broker
build messages with, and it is fast enough for the hot path because a job's message is
mostly fixed bytes around its body.
"""

from __future__ import annotations

import datetime
import struct
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

__all__ = [
    "BYTE",
    "AMQPDecodeError",
    "Array",
    "Byte",
    "Char",
    "Described",
    "Float",
    "Int",
    "Short",
    "Symbol",
    "Timestamp",
    "UByte",
    "UInt",
    "ULong",
    "UShort",
    "decode",
    "decode_all",
    "encode",
    "encode_binary",
    "encode_into",
    "encode_map",
    "string_bytes",
    "symbol_bytes",
]


class AMQPDecodeError(ValueError):
    """Bytes that are not a well-formed AMQP 1.0 encoding (truncated, unknown code, bad UTF-8)."""


class Symbol(str):
    """An AMQP ``symbol``: an ASCII name such as ``x-opt-delivery-time``."""

    __slots__ = ()


class UByte(int):
    __slots__ = ()


class UShort(int):
    __slots__ = ()


class UInt(int):
    __slots__ = ()


class ULong(int):
    __slots__ = ()


class Byte(int):
    __slots__ = ()


class Short(int):
    __slots__ = ()


class Int(int):
    __slots__ = ()


class Float(float):
    """An AMQP 32-bit ``float`` (a plain Python float encodes as ``double``)."""

    __slots__ = ()


class Char(str):
    """An AMQP ``char``: one Unicode code point."""

    __slots__ = ()


class Timestamp(int):
    """An AMQP ``timestamp``: milliseconds since the Unix epoch."""

    __slots__ = ()

    @classmethod
    def from_datetime(cls, value: datetime.datetime) -> Timestamp:
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return cls(round(value.timestamp() * 1000))

    def to_datetime(self) -> datetime.datetime:
        return _EPOCH + datetime.timedelta(milliseconds=int(self))


@attrs.frozen
class Described:
    """A described value: ``descriptor`` (a ULong code or a Symbol name) and its ``value``."""

    descriptor: Any
    value: Any


@attrs.frozen
class Array:
    """An AMQP ``array``: items of one type, named by a constructor code (e.g. ``0xA3`` symbols)."""

    code: int
    items: tuple[Any, ...] = ()


_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)

_pack_B = struct.Struct(">B").pack
_pack_H = struct.Struct(">H").pack
_pack_I = struct.Struct(">I").pack
_pack_Q = struct.Struct(">Q").pack
_pack_b = struct.Struct(">b").pack
_pack_h = struct.Struct(">h").pack
_pack_i = struct.Struct(">i").pack
_pack_q = struct.Struct(">q").pack
_pack_f = struct.Struct(">f").pack
_pack_d = struct.Struct(">d").pack
_unpack_H = struct.Struct(">H").unpack_from
_unpack_I = struct.Struct(">I").unpack_from
_unpack_Q = struct.Struct(">Q").unpack_from
_unpack_b = struct.Struct(">b").unpack_from
_unpack_h = struct.Struct(">h").unpack_from
_unpack_i = struct.Struct(">i").unpack_from
_unpack_q = struct.Struct(">q").unpack_from
_unpack_f = struct.Struct(">f").unpack_from
_unpack_d = struct.Struct(">d").unpack_from
_unpack_II = struct.Struct(">II").unpack_from
_pack_II = struct.Struct(">II").pack

_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_UINT64_MAX: Final = (1 << 64) - 1


# -- encoding ------------------------------------------------------------------------------------


def encode(value: Any) -> bytes:
    """The AMQP encoding of ``value`` (see the module docstring for the type mapping)."""
    out = bytearray()
    encode_into(out, value)
    return bytes(out)


def encode_into(out: bytearray, value: Any) -> None:
    """Append the AMQP encoding of ``value`` to ``out``."""
    cls = type(value)
    encoder = _ENCODERS.get(cls)
    if encoder is not None:
        encoder(out, value)
        return
    for base, encoder in _ENCODERS.items():  # subclasses of the plain types (str enums, ...)
        if base is not type(None) and isinstance(value, base):
            encoder(out, value)
            return
    if isinstance(value, Mapping):
        encode_map(out, value)
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        _encode_list(out, value)
    else:
        raise TypeError(f"no AMQP encoding for a {cls.__name__}")


def _encode_null(out: bytearray, _: Any) -> None:
    out.append(0x40)


def _encode_bool(out: bytearray, value: bool) -> None:
    out.append(0x41 if value else 0x42)


def _encode_int(out: bytearray, value: int) -> None:
    if -128 <= value <= 127:
        out += b"\x55" + _pack_b(value)
    elif _INT64_MIN <= value <= _INT64_MAX:
        out += b"\x81" + _pack_q(value)
    elif 0 <= value <= _UINT64_MAX:
        out += b"\x80" + _pack_Q(value)
    else:
        raise OverflowError(f"{value} does not fit an AMQP long or ulong")


def _encode_ubyte(out: bytearray, value: int) -> None:
    out += b"\x50" + _pack_B(value)


def _encode_ushort(out: bytearray, value: int) -> None:
    out += b"\x60" + _pack_H(value)


def _encode_uint(out: bytearray, value: int) -> None:
    if value == 0:
        out.append(0x43)
    elif value <= 255:
        out += b"\x52" + _pack_B(value)
    else:
        out += b"\x70" + _pack_I(value)


def _encode_ulong(out: bytearray, value: int) -> None:
    if value == 0:
        out.append(0x44)
    elif value <= 255:
        out += b"\x53" + _pack_B(value)
    else:
        out += b"\x80" + _pack_Q(value)


def _encode_byte(out: bytearray, value: int) -> None:
    out += b"\x51" + _pack_b(value)


def _encode_short(out: bytearray, value: int) -> None:
    out += b"\x61" + _pack_h(value)


def _encode_int32(out: bytearray, value: int) -> None:
    if -128 <= value <= 127:
        out += b"\x54" + _pack_b(value)
    else:
        out += b"\x71" + _pack_i(value)


def _encode_float(out: bytearray, value: float) -> None:
    out += b"\x72" + _pack_f(value)


def _encode_double(out: bytearray, value: float) -> None:
    out += b"\x82" + _pack_d(value)


def _encode_char(out: bytearray, value: str) -> None:
    out += b"\x73" + _pack_I(ord(value))


def _encode_timestamp(out: bytearray, value: int) -> None:
    out += b"\x83" + _pack_q(value)


def _encode_datetime(out: bytearray, value: datetime.datetime) -> None:
    _encode_timestamp(out, Timestamp.from_datetime(value))


def _encode_uuid(out: bytearray, value: uuid.UUID) -> None:
    out += b"\x98" + value.bytes


def _encode_variable(out: bytearray, small: int, large: int, data: bytes) -> None:
    size = len(data)
    if size <= 255:
        out.append(small)
        out.append(size)
    else:
        out.append(large)
        out += _pack_I(size)
    out += data


def encode_binary(out: bytearray, value: bytes | bytearray | memoryview) -> None:
    _encode_variable(out, 0xA0, 0xB0, bytes(value))


BYTE: Final = [bytes((i,)) for i in range(256)]


def _variable_bytes(small: bytes, large: bytes, data: bytes) -> bytes:
    size = len(data)
    if size < 256:
        return small + BYTE[size] + data
    return large + _pack_I(size) + data


def string_bytes(text: str) -> bytes:
    """The encoding of an AMQP ``string`` (str8 or str32)."""
    return _variable_bytes(b"\xa1", b"\xb1", text.encode("utf-8"))


def symbol_bytes(text: str) -> bytes:
    """The encoding of an AMQP ``symbol`` (sym8 or sym32)."""
    return _variable_bytes(b"\xa3", b"\xb3", text.encode("ascii"))


def _encode_string(out: bytearray, value: str) -> None:
    out += string_bytes(value)


def _encode_symbol(out: bytearray, value: str) -> None:
    out += symbol_bytes(value)


def _compound(out: bytearray, small: int, large: int, count: int, body: bytearray) -> None:
    if len(body) + 1 <= 255 and count <= 255:
        out.append(small)
        out.append(len(body) + 1)
        out.append(count)
    else:
        out.append(large)
        out += _pack_II(len(body) + 4, count)
    out += body


def _encode_list(out: bytearray, value: Sequence[Any]) -> None:
    if not value:
        out.append(0x45)
        return
    body = bytearray()
    for item in value:
        encode_into(body, item)
    _compound(out, 0xC0, 0xD0, len(value), body)


def encode_map(out: bytearray, value: Mapping[Any, Any]) -> None:
    body = bytearray()
    for key, item in value.items():
        encode_into(body, key)
        encode_into(body, item)
    _compound(out, 0xC1, 0xD1, 2 * len(value), body)


def _encode_described(out: bytearray, value: Described) -> None:
    out.append(0x00)
    encode_into(out, value.descriptor)
    encode_into(out, value.value)


_FIXED_WIDTH: Final = {
    0x50: (1, _pack_B),
    0x51: (1, _pack_b),
    0x60: (2, _pack_H),
    0x61: (2, _pack_h),
    0x70: (4, _pack_I),
    0x71: (4, _pack_i),
    0x80: (8, _pack_Q),
    0x81: (8, _pack_q),
    0x83: (8, _pack_q),
    0x72: (4, _pack_f),
    0x82: (8, _pack_d),
}


def _encode_array(out: bytearray, value: Array) -> None:
    code = value.code
    body = bytearray([code])
    for item in value.items:
        if code in _FIXED_WIDTH:
            body += _FIXED_WIDTH[code][1](item)
        elif code in (0xA0, 0xA1, 0xA3, 0xB0, 0xB1, 0xB3):
            data = (
                bytes(item)
                if code in (0xA0, 0xB0)
                else item.encode("ascii" if code in (0xA3, 0xB3) else "utf-8")
            )
            if code < 0xB0:
                if len(data) > 255:
                    raise OverflowError("an array item is too long for its 8-bit constructor")
                body.append(len(data))
            else:
                body += _pack_I(len(data))
            body += data
        elif code == 0x56:
            body.append(1 if item else 0)
        elif code == 0x98:
            body += item.bytes
        else:
            raise TypeError(f"arrays of constructor 0x{code:02x} are not supported")
    count = len(value.items)
    if len(body) + 1 <= 255 and count <= 255:
        out += bytes((0xE0, len(body) + 1, count))
    else:
        out += b"\xf0" + _pack_II(len(body) + 4, count)
    out += body


_ENCODERS: Final[dict[type, Any]] = {
    type(None): _encode_null,
    bool: _encode_bool,
    Symbol: _encode_symbol,
    Char: _encode_char,
    str: _encode_string,
    UByte: _encode_ubyte,
    UShort: _encode_ushort,
    UInt: _encode_uint,
    ULong: _encode_ulong,
    Byte: _encode_byte,
    Short: _encode_short,
    Int: _encode_int32,
    Timestamp: _encode_timestamp,
    int: _encode_int,
    Float: _encode_float,
    float: _encode_double,
    bytes: encode_binary,
    bytearray: encode_binary,
    memoryview: encode_binary,
    uuid.UUID: _encode_uuid,
    datetime.datetime: _encode_datetime,
    list: _encode_list,
    tuple: _encode_list,
    dict: encode_map,
    Described: _encode_described,
    Array: _encode_array,
}


# -- decoding ------------------------------------------------------------------------------------


def decode(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[Any, int]:
    """Decode one value at ``offset``; return it and the offset just past it."""
    try:
        return _decode(data, offset)
    except (IndexError, struct.error) as exc:
        raise AMQPDecodeError(f"truncated AMQP value at byte {offset}") from exc
    except UnicodeDecodeError as exc:
        raise AMQPDecodeError(f"bad UTF-8 in an AMQP string: {exc.reason}") from exc
    except RecursionError:
        raise AMQPDecodeError(f"AMQP value nested too deeply at byte {offset}") from None


def decode_all(data: bytes | bytearray | memoryview) -> list[Any]:
    """Decode every value in ``data`` (a sequence of encodings back to back)."""
    values = []
    offset = 0
    end = len(data)
    while offset < end:
        value, offset = decode(data, offset)
        values.append(value)
    return values


def _need(data: Any, end: int) -> None:
    if end > len(data):
        raise AMQPDecodeError("truncated AMQP value")


def _decode(data: Any, offset: int) -> tuple[Any, int]:
    code = data[offset]
    offset += 1
    if code == 0x00:
        descriptor, offset = _decode(data, offset)
        value, offset = _decode(data, offset)
        return Described(descriptor, value), offset
    simple = _CONSTANTS.get(code, _MISSING)
    if simple is not _MISSING:
        return simple, offset
    reader = _READERS.get(code)
    if reader is None:
        raise AMQPDecodeError(f"unknown AMQP type code 0x{code:02x} at byte {offset - 1}")
    result: tuple[Any, int] = reader(data, offset)
    return result


_MISSING: Final = object()
_CONSTANTS: Final[dict[int, Any]] = {
    0x40: None,
    0x41: True,
    0x42: False,
    0x43: UInt(0),
    0x44: ULong(0),
}


def _variable(width: int, convert: Any) -> Any:
    def read(data: Any, offset: int) -> tuple[Any, int]:
        if width == 1:
            size = data[offset]
        else:
            (size,) = _unpack_I(data, offset)
        start = offset + width
        end = start + size
        _need(data, end)
        return convert(bytes(data[start:end])), end

    return read


def _fixed(size: int, unpack: Any, wrap: Any) -> Any:
    def read(data: Any, offset: int) -> tuple[Any, int]:
        (value,) = unpack(data, offset)
        return wrap(value), offset + size

    return read


def _read_ubyte(data: Any, offset: int) -> tuple[Any, int]:
    return UByte(data[offset]), offset + 1


def _read_small(wrap: Any) -> Any:
    def read(data: Any, offset: int) -> tuple[Any, int]:
        return wrap(data[offset]), offset + 1

    return read


def _read_signed_small(wrap: Any) -> Any:
    def read(data: Any, offset: int) -> tuple[Any, int]:
        (value,) = _unpack_b(data, offset)
        return wrap(value), offset + 1

    return read


def _read_bool_byte(data: Any, offset: int) -> tuple[Any, int]:
    return data[offset] != 0, offset + 1


def _read_uuid(data: Any, offset: int) -> tuple[Any, int]:
    end = offset + 16
    _need(data, end)
    return uuid.UUID(bytes=bytes(data[offset:end])), end


def _read_char(data: Any, offset: int) -> tuple[Any, int]:
    (value,) = _unpack_I(data, offset)
    try:
        return Char(chr(value)), offset + 4
    except (ValueError, OverflowError) as exc:  # past U+10FFFF; OverflowError from 2**31 up
        raise AMQPDecodeError(f"char U+{value:X} is not a code point") from exc


def _read_decimal(size: int) -> Any:
    def read(data: Any, offset: int) -> tuple[Any, int]:
        end = offset + size
        _need(data, end)
        return Described(Symbol(f"decimal{size * 8}"), bytes(data[offset:end])), end

    return read


def _compound_reader(width: int, as_map: bool) -> Any:
    def read(data: Any, offset: int) -> tuple[Any, int]:
        if width == 1:
            size, count = data[offset], data[offset + 1]
        else:
            size, count = _unpack_II(data, offset)
        end = offset + width + size
        _need(data, end)
        position = offset + 2 * width
        items = []
        for _ in range(count):
            value, position = _decode(data, position)
            items.append(value)
        if position != end:
            raise AMQPDecodeError("an AMQP list or map's size does not match its items")
        if as_map:
            if count % 2:
                raise AMQPDecodeError("an AMQP map has an odd number of items")
            try:
                return dict(zip(items[::2], items[1::2], strict=True)), end
            except TypeError as exc:  # an unhashable key (a list or map)
                raise AMQPDecodeError("an AMQP map key is a list or map") from exc
        return items, end

    return read


def _array_reader(width: int) -> Any:
    def read(data: Any, offset: int) -> tuple[Any, int]:
        if width == 1:
            size, count = data[offset], data[offset + 1]
        else:
            size, count = _unpack_II(data, offset)
        end = offset + width + size
        _need(data, end)
        if count > size:  # even items of no bytes (null, true...) count: work stays linear
            raise AMQPDecodeError("an AMQP array counts more items than it has bytes")
        position = offset + 2 * width
        code = data[position]
        descriptor = None
        if code == 0x00:
            descriptor, position = _decode(data, position + 1)
            code = data[position]
        position += 1
        items = []
        for _ in range(count):
            value, position = _element(data, code, position)
            items.append(Described(descriptor, value) if descriptor is not None else value)
        if position != end:
            raise AMQPDecodeError("an AMQP array's size does not match its items")
        return Array(code, tuple(items)), end

    return read


def _element(data: Any, code: int, position: int) -> tuple[Any, int]:
    # Inside an array every element shares one constructor, written once before them.
    simple = _CONSTANTS.get(code, _MISSING)
    if simple is not _MISSING:
        return simple, position
    reader = _READERS.get(code)
    if reader is None:
        raise AMQPDecodeError(f"unknown AMQP array constructor 0x{code:02x}")
    result: tuple[Any, int] = reader(data, position)
    return result


def _text(encoding: str, wrap: Any) -> Any:
    def convert(raw: bytes) -> Any:
        return wrap(raw.decode(encoding))

    return convert


_READERS: Final[dict[int, Any]] = {
    0x45: lambda data, offset: ([], offset),
    0x50: _read_ubyte,
    0x51: _read_signed_small(Byte),
    0x52: _read_small(UInt),
    0x53: _read_small(ULong),
    0x54: _read_signed_small(Int),
    0x55: _read_signed_small(int),
    0x56: _read_bool_byte,
    0x60: _fixed(2, _unpack_H, UShort),
    0x61: _fixed(2, _unpack_h, Short),
    0x70: _fixed(4, _unpack_I, UInt),
    0x71: _fixed(4, _unpack_i, Int),
    0x72: _fixed(4, _unpack_f, Float),
    0x73: _read_char,
    0x74: _read_decimal(4),
    0x80: _fixed(8, _unpack_Q, ULong),
    0x81: _fixed(8, _unpack_q, int),
    0x82: _fixed(8, _unpack_d, float),
    0x83: _fixed(8, _unpack_q, Timestamp),
    0x84: _read_decimal(8),
    0x94: _read_decimal(16),
    0x98: _read_uuid,
    0xA0: _variable(1, bytes),
    0xA1: _variable(1, _text("utf-8", str)),
    0xA3: _variable(1, _text("ascii", Symbol)),
    0xB0: _variable(4, bytes),
    0xB1: _variable(4, _text("utf-8", str)),
    0xB3: _variable(4, _text("ascii", Symbol)),
    0xC0: _compound_reader(1, as_map=False),
    0xC1: _compound_reader(1, as_map=True),
    0xD0: _compound_reader(4, as_map=False),
    0xD1: _compound_reader(4, as_map=True),
    0xE0: _array_reader(1),
    0xF0: _array_reader(4),
}


def _compound_at(data: Any, offset: int) -> tuple[int, int, int]:
    """A list or map's item count, where its items start and where it ends (its type code at
    ``offset`` is one of 0xC0, 0xC1: one-byte size and count; 0xD0, 0xD1: four-byte)."""
    if data[offset] < 0xD0:
        size, count = data[offset + 1], data[offset + 2]
        position = offset + 3
        end = offset + 2 + size
    else:
        size, count = _unpack_II(data, offset + 1)
        position = offset + 9
        end = offset + 5 + size
    if end > len(data):
        raise AMQPDecodeError("truncated AMQP list or map")
    return count, position, end


def decode_fields(data: Any, offset: int) -> tuple[list[Any], int]:
    """A list at ``offset`` whose items are mostly null, boolean, string, symbol, small
    unsigned or timestamp (the header and properties sections): those are read inline, the
    rest through :func:`decode`. Values come back plain (``int``, ``str``), not wrapped."""
    try:
        code = data[offset]
        if code == 0x45:
            return [], offset + 1
        if code != 0xC0 and code != 0xD0:
            raise AMQPDecodeError(f"expected a list, found type code 0x{code:02x}")
        count, position, end = _compound_at(data, offset)
        items: list[Any] = []
        append = items.append
        for _ in range(count):
            code = data[position]
            if code == 0x40:
                append(None)
                position += 1
            elif code == 0xA1 or code == 0xA3:
                size = data[position + 1]
                start = position + 2
                position = start + size
                append(str(data[start:position], "utf-8"))  # a symbol as plain text too
            elif code == 0x41 or code == 0x42:
                append(code == 0x41)
                position += 1
            elif code == 0x50 or code == 0x52 or code == 0x53:
                append(data[position + 1])
                position += 2
            elif code == 0x43 or code == 0x44:
                append(0)
                position += 1
            elif code == 0x83:
                (value,) = _unpack_q(data, position + 1)
                append(value)
                position += 9
            else:
                value, position = decode(data, position)
                append(value)
        if position != end:
            raise AMQPDecodeError("an AMQP list's size does not match its items")
        return items, end
    except (IndexError, struct.error) as exc:
        raise AMQPDecodeError(f"truncated AMQP list at byte {offset}") from exc
    except UnicodeDecodeError as exc:
        raise AMQPDecodeError(f"bad UTF-8 in an AMQP string: {exc.reason}") from exc


def decode_map(data: Any, offset: int) -> tuple[Any, int]:
    """A map at ``offset`` whose keys and values are mostly strings (application-properties):
    those are read inline, the rest through :func:`decode`. Anything but a map (null, say) is
    left to :func:`decode` whole; the caller checks what it got."""
    try:
        code = data[offset]
        if code != 0xC1 and code != 0xD1:
            return decode(data, offset)
        count, position, end = _compound_at(data, offset)
        if count % 2:
            raise AMQPDecodeError("an AMQP map has an odd number of items")
        items: list[Any] = []
        append = items.append
        for _ in range(count):
            code = data[position]
            if code == 0xA1:
                size = data[position + 1]
                start = position + 2
                position = start + size
                append(str(data[start:position], "utf-8"))
            elif code == 0xB1:
                (size,) = _unpack_I(data, position + 1)
                start = position + 5
                position = start + size
                append(str(data[start:position], "utf-8"))
            else:
                value, position = decode(data, position)
                append(value)
        if position != end:
            raise AMQPDecodeError("an AMQP list or map's size does not match its items")
        try:
            return dict(zip(items[::2], items[1::2], strict=True)), end
        except TypeError as exc:  # an unhashable key (a list or map)
            raise AMQPDecodeError("an AMQP map key is a list or map") from exc
    except (IndexError, struct.error) as exc:
        raise AMQPDecodeError(f"truncated AMQP map at byte {offset}") from exc
    except UnicodeDecodeError as exc:
        raise AMQPDecodeError(f"bad UTF-8 in an AMQP string: {exc.reason}") from exc
