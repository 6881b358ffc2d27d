"""Bounds-checked reading of GGUF primitives and metadata values from a byte buffer.

Every length and count is checked against the bytes left in the file *before* anything is allocated,
so a claimed 2^60-element array fails at once. Numeric arrays come back as read-only 1-D numpy views
over the buffer; string arrays as `list[str]`; nested arrays as lists of those.
"""

from __future__ import annotations

import codecs
import struct
from typing import Any

import numpy as np

from gguf_loader.constants import MAX_ARRAY_DEPTH, VALUE_DTYPES, GGUFValueType
from gguf_loader.errors import GGUFTruncatedError, GGUFValueError

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SCALARS: dict[GGUFValueType, struct.Struct] = {
    GGUFValueType.UINT8: struct.Struct("<B"),
    GGUFValueType.INT8: struct.Struct("<b"),
    GGUFValueType.UINT16: struct.Struct("<H"),
    GGUFValueType.INT16: struct.Struct("<h"),
    GGUFValueType.UINT32: _U32,
    GGUFValueType.INT32: struct.Struct("<i"),
    GGUFValueType.FLOAT32: struct.Struct("<f"),
    GGUFValueType.BOOL: struct.Struct("<B"),
    GGUFValueType.UINT64: _U64,
    GGUFValueType.INT64: struct.Struct("<q"),
    GGUFValueType.FLOAT64: struct.Struct("<d"),
}
LONG_STRING = 4096  # bytes; longer strings are decoded without copying (see decode_utf8)
# Smallest encoding of one array element, used to bound counts by the bytes left.
_MIN_ELEMENT_BYTES = {GGUFValueType.STRING: 8, GGUFValueType.ARRAY: 4 + 8}


def decode_utf8(buf: Any, u8: np.ndarray, start: int, end: int) -> str:
    """The UTF-8 text at [start, end). A long string is checked slice by slice, then decoded in place,
    so neither a copy of its bytes nor a failed decode's error object ever holds more than a slice."""
    if end - start <= LONG_STRING:
        return buf[start:end].decode("utf-8")
    checker = codecs.getincrementaldecoder("utf-8")()
    for at in range(start, end, LONG_STRING):
        checker.decode(u8[at : min(at + LONG_STRING, end)].data, final=at + LONG_STRING >= end)
    return codecs.utf_8_decode(u8[start:end], "strict", True)[0]


class Cursor:
    """A read position over `buf` (bytes-like, `size` bytes) and a uint8 numpy view of the same bytes."""

    def __init__(self, buf: Any, u8: np.ndarray, pos: int = 0) -> None:
        self.buf = buf
        self.u8 = u8  # [size] uint8, read-only
        self.size = len(u8)
        self.pos = pos

    def need(self, n: int, what: str) -> int:
        """Reserve `n` bytes for `what`; returns their start offset."""
        start = self.pos
        if n > self.size - start:
            raise GGUFTruncatedError(
                f"{what}: needs {n} bytes at offset {start}, only {self.size - start} left in the file"
            )
        self.pos = start + n
        return start

    def u32(self, what: str) -> int:
        return _U32.unpack_from(self.buf, self.need(4, what))[0]

    def u64(self, what: str) -> int:
        return _U64.unpack_from(self.buf, self.need(8, what))[0]

    def string(self, what: str) -> str:
        at = self.pos
        n = self.u64(f"{what} length")
        start = self.need(n, f"{what} ({n}-byte string)")
        try:
            return decode_utf8(self.buf, self.u8, start, start + n)
        except UnicodeDecodeError as exc:
            raise GGUFValueError(f"{what}: string at offset {at} is not valid UTF-8 ({exc.reason})") from None

    def value_type(self, what: str) -> GGUFValueType:
        at = self.pos
        number = self.u32(f"{what} value type")
        if number not in GGUFValueType._value2member_map_:
            raise GGUFValueError(f"{what}: unknown value type {number} at offset {at}")
        return GGUFValueType(number)


def read_value(cur: Cursor, vtype: GGUFValueType, key: str) -> tuple[Any, GGUFValueType | None]:
    """Read one value of `vtype`; returns it and, for arrays, the element type."""
    if vtype is GGUFValueType.STRING:
        return cur.string(f"key {key!r}"), None
    if vtype is GGUFValueType.ARRAY:
        return read_array(cur, key, depth=1)
    scalar = _SCALARS[vtype]
    at = cur.need(scalar.size, f"key {key!r} {vtype.name} value")
    value = scalar.unpack_from(cur.buf, at)[0]
    if vtype is GGUFValueType.BOOL:
        if value > 1:
            raise GGUFValueError(f"key {key!r}: bool at offset {at} is {value}, not 0 or 1")
        value = bool(value)
    return value, None


def read_array(cur: Cursor, key: str, depth: int) -> tuple[Any, GGUFValueType]:
    """Read an array header and its elements; returns the value and its element type."""
    if depth > MAX_ARRAY_DEPTH:
        raise GGUFValueError(f"key {key!r}: arrays nested deeper than {MAX_ARRAY_DEPTH} at offset {cur.pos}")
    etype = cur.value_type(f"key {key!r} array element")
    count_at = cur.pos
    count = cur.u64(f"key {key!r} array count")
    min_bytes = _MIN_ELEMENT_BYTES.get(etype) or VALUE_DTYPES[etype].itemsize
    if count * min_bytes > cur.size - cur.pos:
        raise GGUFTruncatedError(
            f"key {key!r}: array count {count} at offset {count_at} needs at least {count * min_bytes} "
            f"bytes, only {cur.size - cur.pos} left in the file"
        )
    if etype is GGUFValueType.STRING:
        return _read_strings(cur, key, count), etype
    if etype is GGUFValueType.ARRAY:
        items = [None] * count
        for i in range(count):
            items[i] = read_array(cur, f"{key}[{i}]", depth + 1)[0]
        return items, etype
    dtype = VALUE_DTYPES[etype]
    start = cur.need(count * dtype.itemsize, f"key {key!r} {etype.name} array")
    raw = cur.u8[start : start + count * dtype.itemsize]  # [count * itemsize] uint8
    if etype is GGUFValueType.BOOL and count and raw.max() > 1:
        bad = int(np.argmax(raw > 1))
        raise GGUFValueError(f"key {key!r}: bool element {bad} at offset {start + bad} is not 0 or 1")
    return raw.view(dtype), etype  # [count]


def _read_strings(cur: Cursor, key: str, count: int) -> list[str]:
    """Decode `count` length-prefixed strings; the hot path for 150k-token vocabularies."""
    buf, pos, end_of_file = cur.buf, cur.pos, cur.size
    unpack = _U64.unpack_from
    out: list[Any] = [None] * count
    i = start = 0
    try:
        for i in range(count):
            n = unpack(buf, pos)[0]  # struct.error past the end of the buffer
            start = pos + 8
            pos = start + n
            if n > LONG_STRING or pos > end_of_file:
                if pos > end_of_file:
                    raise GGUFTruncatedError(
                        f"key {key!r}: string {i} at offset {start - 8} claims {n} bytes, "
                        f"only {end_of_file - start} left in the file"
                    )
                out[i] = decode_utf8(buf, cur.u8, start, pos)
            else:
                out[i] = buf[start:pos].decode("utf-8")
    except struct.error:
        raise GGUFTruncatedError(
            f"key {key!r}: string {i} length at offset {pos} runs past the end"
        ) from None
    except UnicodeDecodeError as exc:
        raise GGUFValueError(
            f"key {key!r}: string {i} at offset {start - 8} is not valid UTF-8 ({exc.reason})"
        ) from None
    cur.pos = pos
    return out
