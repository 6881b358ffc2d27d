"""Structure-aware GGUF mutation for the fuzzing figures (bench/fuzz_gguf.py) and their CI variant.

A seed is a real or synthetic GGUF file re-serialised field by field, so every integer the format
holds (version, counts, string lengths, value types, array counts, n_dims, dims, ggml types, data
offsets, scalar values) has a known offset and width. A case is the seed with 1-4 of those fields
set to hostile values (0, 2^31, 2^60, 2^64-1, off by one...), plus at most one length-changing edit
(truncate, delete, duplicate, insert) or a raw byte flip; it is fully determined by (seed, case
number), so any failure reproduces with `build_case`.

Seeds from real files keep their whole header and tensor table but cut metadata arrays (vocab,
merges, scores) to `max_array` entries; their data section is a sparse hole of the original length.
"""

from __future__ import annotations

import os
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gguf_loader.constants import GGUF_MAGIC, GGUFValueType

V = GGUFValueType
_SCALAR_FORMATS = {V.UINT8: "<B", V.INT8: "<b", V.UINT16: "<H", V.INT16: "<h", V.UINT32: "<I",
                   V.INT32: "<i", V.FLOAT32: "<f", V.BOOL: "<B", V.UINT64: "<Q", V.INT64: "<q",
                   V.FLOAT64: "<d"}
_UINT_FORMAT = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}
# hostile values for an integer field, cut to its width
_INTERESTING = (0, 1, 2, 3, 4, 7, 8, 31, 32, 33, 255, 256, 1023, 4096, 65535, 65536, (1 << 31) - 1, 1 << 31,
                (1 << 32) - 1, 1 << 32, 1 << 40, 1 << 59, 1 << 60, (1 << 63) - 1, 1 << 63, (1 << 64) - 2,
                (1 << 64) - 1)
_FLOATS = (0.0, -0.0, 1e-30, -1.0, 1e30, float("inf"), float("-inf"), float("nan"), 3.4e38)
_BAD_UTF8 = (b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x00")


@dataclass(frozen=True, slots=True)
class Field:
    """One integer (or float) field of the serialised header."""

    offset: int
    size: int
    kind: str  # "version" "n_tensors" "n_kv" "strlen" "vtype" "etype" "count" "n_dims" "dim"
    #          "ggml_type" "tensor_offset" "int" "float" "bool"


@dataclass
class Seed:
    """A serialised GGUF: `header` bytes with its `fields`, then `data_len` bytes of tensor data
    (`data` when real bytes are kept, else a sparse hole)."""

    name: str
    header: bytes
    fields: list[Field]
    data_len: int
    data: bytes | None = None
    strings: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) of string payloads
    version: int = 3
    kvs: list[tuple[str, GGUFValueType, Any, GGUFValueType | None]] = field(default_factory=list)
    tensors: list[tuple[str, tuple[int, ...], int, int]] = field(default_factory=list)  # name dims type off
    alignment: int = 32
    by_kind: dict[str, list[Field]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.by_kind = _by_kind(self.fields)

    @property
    def size(self) -> int:
        return len(self.header) + self.data_len


def _by_kind(fields: list[Field]) -> dict[str, list[Field]]:
    out: dict[str, list[Field]] = {}
    for f in fields:
        out.setdefault(f.kind, []).append(f)
    return out


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()
        self.fields: list[Field] = []
        self.strings: list[tuple[int, int]] = []

    def uint(self, value: int, size: int, kind: str) -> None:
        self.fields.append(Field(len(self.out), size, kind))
        self.out += struct.pack(_UINT_FORMAT[size], value)

    def string(self, text: str) -> None:
        data = text.encode()
        self.uint(len(data), 8, "strlen")
        if data:
            self.strings.append((len(self.out), len(data)))
        self.out += data

    def scalar(self, vtype: GGUFValueType, value: Any) -> None:
        fmt = _SCALAR_FORMATS[vtype]
        kind = "float" if vtype in (V.FLOAT32, V.FLOAT64) else "bool" if vtype is V.BOOL else "int"
        self.fields.append(Field(len(self.out), struct.calcsize(fmt), kind))
        self.out += struct.pack(fmt, value)

    def value(self, vtype: GGUFValueType, value: Any, etype: GGUFValueType | None) -> None:
        if vtype is V.STRING:
            self.string(value)
        elif vtype is V.ARRAY:
            self.uint(int(etype), 4, "etype")
            self.uint(len(value), 8, "count")
            if etype is V.STRING:
                for item in value:
                    self.string(item)
            else:
                start = len(self.out)
                self.out += np.asarray(value, dtype=_SCALAR_FORMATS[etype][1:]).tobytes()
                width = struct.calcsize(_SCALAR_FORMATS[etype])
                kind = "float" if etype in (V.FLOAT32, V.FLOAT64) else "int"
                for i in range(min(len(value), 4)):  # the first elements, as values to mutate
                    self.fields.append(Field(start + i * width, width, kind))
        else:
            self.scalar(vtype, value)


def seed_from_gguf(path: str | os.PathLike[str], *, max_array: int = 256, keep_data_up_to: int = 4 << 20,
                   name: str | None = None) -> Seed:
    """Re-serialise `path` field by field; arrays cut to `max_array`; data kept if small enough."""
    from gguf_loader.reader import open_gguf

    with open_gguf(path) as gguf:
        kvs = []
        for key, value in gguf.metadata.items():
            vtype, etype = gguf.metadata_types[key], gguf.array_types.get(key)
            if etype is V.ARRAY:
                continue  # nested arrays: no real model has them; the hand-built tests cover them
            if vtype is V.ARRAY:
                value = list(value[:max_array]) if etype is V.STRING else np.array(value[:max_array])
            kvs.append((key, vtype, value, etype))
        tensors = [(t.name, t.dims, int(t.ggml_type), t.offset - gguf.data_offset)
                   for t in gguf.tensors.values()]
        data_len = max(0, gguf.file_size - gguf.data_offset)
        data = bytes(gguf._view()[gguf.data_offset:]) if data_len <= keep_data_up_to else None
        version, alignment = gguf.version, gguf.alignment
    header, fields, strings = serialize(version, kvs, tensors, alignment)
    return Seed(name or Path(path).name, header, fields, data_len, data, strings, version, kvs, tensors,
                alignment)


def serialize(version: int, kvs: list, tensors: list, alignment: int) -> tuple[bytes, list[Field], list]:
    """Header bytes, their integer fields and string payloads, for these metadata and tensor infos."""
    w = _Writer()
    w.out += GGUF_MAGIC
    w.uint(version, 4, "version")
    w.uint(len(tensors), 8, "n_tensors")
    w.uint(len(kvs), 8, "n_kv")
    for key, vtype, value, etype in kvs:
        w.string(key)
        w.uint(int(vtype), 4, "vtype")
        w.value(vtype, value, etype)
    for name, dims, ggml_type, offset in tensors:
        w.string(name)
        w.uint(len(dims), 4, "n_dims")
        for dim in dims:
            w.uint(dim, 8, "dim")
        w.uint(ggml_type, 4, "ggml_type")
        w.uint(offset, 8, "tensor_offset")
    w.out += b"\x00" * (-len(w.out) % alignment)
    return bytes(w.out), w.fields, w.strings


# ---- semantic edits: a well-formed file whose values lie

HOSTILE_STRINGS = (
    "", "x", "llama", "gpt2", "qwen2", "phi3", "unknown-arch", "\x00", "🙂" * 100, "a" * 70000,
    "{{ ''.__class__.__mro__[1].__subclasses__() }}", "{% for i in range(10**9) %}x{% endfor %}",
    "{{ 'x' * 10**9 }}", "{% if %}", "{{ messages[0].content * 999999999 }}", "<0xZZ>", "<0x>",
)


def _random_value(rng: random.Random) -> tuple[GGUFValueType, Any, GGUFValueType | None]:
    pick = rng.randrange(8)
    if pick == 0:
        return V.STRING, rng.choice(HOSTILE_STRINGS), None
    if pick == 1:
        return V.UINT32, rng.choice(_INTERESTING) % (1 << 32), None
    if pick == 2:
        return V.INT32, rng.choice((-1, -(1 << 31), 0, 1, (1 << 31) - 1)), None
    if pick == 3:
        return V.FLOAT32, rng.choice(_FLOATS), None
    if pick == 4:
        return V.BOOL, rng.choice((True, False)), None
    if pick == 5:
        return V.UINT64, rng.choice(_INTERESTING), None
    if pick == 6:
        return V.ARRAY, [rng.choice(HOSTILE_STRINGS[:9]) for _ in range(rng.randrange(0, 5))], V.STRING
    return V.ARRAY, np.array([rng.choice((0, 1, -1, 7, 1 << 30)) for _ in range(rng.randrange(0, 5))],
                             dtype=np.int32), V.INT32


def _semantic_edit(rng: random.Random, kvs: list, tensors: list) -> str:
    roll = rng.random()
    if roll < 0.45 and kvs:  # a key gets another type or a hostile value
        i = rng.randrange(len(kvs))
        key, vtype, value, etype = kvs[i]
        if vtype is V.ARRAY and rng.random() < 0.5:
            n = len(value)
            cut = rng.choice((0, 1, n // 2, max(n - 1, 0)))
            kvs[i] = (key, vtype, value[:cut], etype)
            return f"array {key} cut to {cut}"
        kvs[i] = (key, *_random_value(rng))
        return f"value {key} -> {kvs[i][1].name}"
    if roll < 0.6 and kvs:
        key = kvs.pop(rng.randrange(len(kvs)))[0]
        return f"drop key {key}"
    if roll < 0.65 and kvs:
        key = rng.choice(kvs)[0]
        kvs.append((key, *_random_value(rng)))
        return f"duplicate key {key}"
    if roll < 0.75 and tensors:
        name = tensors.pop(rng.randrange(len(tensors)))[0]
        return f"drop tensor {name}"
    if tensors:
        i = rng.randrange(len(tensors))
        name, dims, ggml_type, offset = tensors[i]
        pick = rng.randrange(4)
        if pick == 0:
            dims = tuple(reversed(dims)) if len(dims) > 1 else (dims[0] * 2,)
        elif pick == 1:
            ggml_type = rng.choice((0, 1, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 30))
        elif pick == 2:
            offset = rng.choice(tensors)[3]
        else:
            name = rng.choice(tensors)[0] if rng.random() < 0.5 else name + ".extra"
        tensors[i] = (name, dims, ggml_type, offset)
        return f"tensor {tensors[i][0]} edit {pick}"
    return "none"


# ---- cases


@dataclass(frozen=True, slots=True)
class Case:
    seed: str
    number: int
    header: bytes
    size: int  # total file size (header, then data or a sparse hole, cut or padded to this)
    data: bytes | None
    edits: tuple[str, ...]  # what was done, for the report

    def write(self, path: Path) -> None:
        with open(path, "wb") as fh:
            body = self.header if self.data is None else self.header + self.data
            fh.write(body[: self.size])
            fh.truncate(self.size)


def _interesting_int(rng: random.Random, old: int, size: int) -> int:
    limit = 1 << (8 * size)
    pick = rng.random()
    if pick < 0.55:
        value = rng.choice(_INTERESTING)
    elif pick < 0.8:
        value = old + rng.choice((-2, -1, 1, 2, 16, -16, 1 << 20))
    elif pick < 0.9:
        value = old * rng.choice((2, 3, 1 << 10, 1 << 30))
    else:
        value = rng.getrandbits(8 * size)
    return value % limit


def _mutate_field(rng: random.Random, buf: bytearray, f: Field) -> str:
    old = buf[f.offset : f.offset + f.size]
    if f.kind == "float":
        fmt = "<f" if f.size == 4 else "<d"
        value = rng.choice(_FLOATS)
        struct.pack_into(fmt, buf, f.offset, value)
        return f"{f.kind}@{f.offset}={value}"
    if f.kind in ("vtype", "etype", "ggml_type") and rng.random() < 0.6:
        value = rng.randrange(0, 42)  # every defined type and a few past the end
    elif f.kind == "n_dims" and rng.random() < 0.5:
        value = rng.randrange(0, 9)
    elif f.kind == "bool" and rng.random() < 0.5:
        value = rng.choice((2, 255))
    else:
        value = _interesting_int(rng, int.from_bytes(old, "little"), f.size)
    buf[f.offset : f.offset + f.size] = value.to_bytes(f.size, "little")
    return f"{f.kind}@{f.offset}={value}"


def build_case(seed: Seed, number: int) -> Case:
    """Case `number` of `seed`: deterministic."""
    rng = random.Random(f"{seed.name}:{number}")
    edits: list[str] = []
    header, fields, strings = seed.header, seed.fields, seed.strings
    n_field_edits = rng.choice((1, 1, 1, 2, 2, 3, 4))
    if rng.random() < 0.4:  # a well-formed file whose values lie, sometimes with a field edit on top
        kvs, tensors = list(seed.kvs), list(seed.tensors)
        edits += [_semantic_edit(rng, kvs, tensors) for _ in range(rng.choice((1, 1, 2, 3)))]
        header, fields, strings = serialize(seed.version, kvs, tensors, seed.alignment)
        n_field_edits = rng.choice((0, 0, 0, 1))
    buf = bytearray(header)
    size = len(header) + seed.data_len
    for _ in range(n_field_edits):
        roll = rng.random()
        if roll < 0.75 and fields:  # a kind first, so rare kinds (version, n_kv) get their share
            by_kind = seed.by_kind if fields is seed.fields else _by_kind(fields)
            edits.append(_mutate_field(rng, buf, rng.choice(by_kind[rng.choice(list(by_kind))])))
        elif roll < 0.85 and strings:
            at, n = rng.choice(strings)
            pos = at + rng.randrange(n)
            bad = rng.choice(_BAD_UTF8)
            buf[pos : pos + len(bad)] = bad
            edits.append(f"utf8@{pos}")
        else:
            pos = rng.randrange(4, len(buf))
            buf[pos] = rng.randrange(256)
            edits.append(f"byte@{pos}")
    data = seed.data
    roll = rng.random()
    if edits and roll < 0.3 and not n_field_edits:
        pass  # a semantic edit alone: keep the file well-formed
    elif roll < 0.12:  # truncate: in the header mostly, sometimes in the data
        size = rng.randrange(0, len(buf)) if rng.random() < 0.8 else rng.randrange(len(buf), size + 1)
        edits.append(f"truncate@{size}")
    elif roll < 0.20:
        at = rng.randrange(4, len(buf))
        n = rng.choice((1, 2, 4, 8, rng.randrange(1, 64)))
        del buf[at : at + n]
        size -= min(n, len(header) - at)
        edits.append(f"delete@{at}+{n}")
    elif roll < 0.26:
        at = rng.randrange(4, len(buf))
        n = rng.choice((4, 8, 12, rng.randrange(1, 256)))
        chunk = bytes(buf[at : at + n])
        buf[at:at] = chunk
        size += len(chunk)
        edits.append(f"duplicate@{at}+{len(chunk)}")
    elif roll < 0.30 and data:
        data = bytearray(data)
        for _ in range(rng.randrange(1, 16)):  # data bytes: NaN/inf scales, garbage blocks
            pos = rng.randrange(len(data))
            data[pos] = rng.choice((0x7C, 0x7F, 0xFF, 0x00, rng.randrange(256)))
        data = bytes(data)
        edits.append("data-bytes")
    if data is not None and len(buf) != len(header):
        size = min(size, len(buf) + len(data))
    return Case(seed.name, number, bytes(buf), max(size, 0), data, tuple(edits))
