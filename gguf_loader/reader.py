"""Open a GGUF file: parse and validate header, metadata and tensor infos over one read-only mmap.

Nothing is trusted: every count, length, type, dim and offset is checked before use and each failure
is a `GGUFError` subclass naming the key, tensor or byte offset. No tensor data is read at open;
`raw()` returns zero-copy views of the mapping.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gguf_loader import quants
from gguf_loader.constants import (
    BLOCK_SIZES,
    DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    INT64_MAX,
    KEY_ALIGNMENT,
    MAX_ALIGNMENT,
    MAX_DIMS,
    SUPPORTED_VERSIONS,
    GGMLType,
    GGUFValueType,
    ggml_type_name,
)
from gguf_loader.errors import (
    GGUFError,
    GGUFFormatError,
    GGUFOpenError,
    GGUFTensorError,
    GGUFTruncatedError,
    GGUFValueError,
    UnsupportedTypeError,
)
from gguf_loader.metadata import Cursor, read_value

logger = logging.getLogger(__name__)

HEADER_BYTES = 4 + 4 + 8 + 8  # magic, version, tensor count, kv count
MIN_KV_BYTES = 8 + 4 + 1  # empty key, value type, one-byte value
MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8  # empty name, n_dims, one dim, type, offset


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """Where a tensor lives: `dims` in ggml order (ne0 first), `shape` in numpy order (reversed)."""

    name: str
    ggml_type: GGMLType
    dims: tuple[int, ...]
    shape: tuple[int, ...]
    offset: int  # absolute byte offset in the file
    nbytes: int
    n_elements: int


class GGUFFile:
    """A validated GGUF file. Use `open_gguf(path)`; also a context manager."""

    def __init__(self, path: Path, mm: mmap.mmap) -> None:
        self.path = path
        self._mm = mm
        self._u8: np.ndarray | None = np.frombuffer(mm, dtype=np.uint8)  # [file_size]
        self.file_size = len(mm)
        self.version = 0
        self.alignment = DEFAULT_ALIGNMENT
        self.data_offset = 0
        self.metadata: dict[str, Any] = {}
        self.metadata_types: dict[str, GGUFValueType] = {}
        self.array_types: dict[str, GGUFValueType] = {}  # element type of each ARRAY value
        self.tensors: dict[str, TensorInfo] = {}

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes: a read-only uint8 view of the mapping, no copy."""
        info = self._info(name)
        return self._view()[info.offset : info.offset + info.nbytes]  # [nbytes]

    def dequantize(self, name: str) -> np.ndarray:
        """The tensor as float32 of `info.shape` (F32 data stays a read-only view)."""
        info = self._info(name)
        try:
            values = quants.dequantize(self.raw(name), info.ggml_type, info.n_elements)
        except UnsupportedTypeError as exc:
            raise UnsupportedTypeError(f"tensor {name!r}: {exc}") from None
        return values.reshape(info.shape)

    def close(self) -> None:
        """Drop the mapping; views handed out earlier keep it alive until they are gone."""
        self._u8 = None
        try:
            self._mm.close()
        except BufferError:
            logger.debug("%s: views still in use; the mapping closes when the last one goes", self.path)

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GGUFFile({str(self.path)!r}, v{self.version}, {len(self.tensors)} tensors)"

    def _info(self, name: str) -> TensorInfo:
        info = self.tensors.get(name)
        if info is None:
            raise GGUFTensorError(f"{self.path}: no tensor named {name!r}")
        return info

    def _view(self) -> np.ndarray:
        if self._u8 is None:
            raise GGUFError(f"{self.path}: file is closed")
        return self._u8


def open_gguf(path: str | os.PathLike[str]) -> GGUFFile:
    """Map `path` read-only, then parse and validate everything but the tensor data."""
    path = Path(path)
    started = time.perf_counter()
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < HEADER_BYTES:
                raise GGUFTruncatedError(f"{path}: {size} bytes is shorter than a {HEADER_BYTES}-byte header")
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise GGUFOpenError(f"cannot open {path}: {exc.strerror or exc}") from exc
    gguf = GGUFFile(path, mm)
    try:
        _parse(gguf, Cursor(mm, gguf._view()))
    except GGUFError as exc:
        gguf.close()
        raise type(exc)(f"{path}: {exc}") from None
    logger.debug(
        "opened %s: v%d, %d keys, %d tensors in %.3f s",
        path,
        gguf.version,
        len(gguf.metadata),
        len(gguf.tensors),
        time.perf_counter() - started,
    )
    return gguf


def _parse(gguf: GGUFFile, cur: Cursor) -> None:
    magic = bytes(cur.buf[0:4])
    if magic != GGUF_MAGIC:
        raise GGUFFormatError(f"bad magic {magic!r} at offset 0, expected {GGUF_MAGIC!r}")
    cur.pos = 4
    gguf.version = cur.u32("version")
    if gguf.version not in SUPPORTED_VERSIONS:
        hint = " (big-endian files are not supported)" if gguf.version >= 1 << 16 else ""
        raise GGUFFormatError(
            f"version {gguf.version} at offset 4 is not supported, only {SUPPORTED_VERSIONS}{hint}"
        )
    n_tensors = cur.u64("tensor count")
    n_kv = cur.u64("metadata kv count")
    left = cur.size - cur.pos
    if n_kv * MIN_KV_BYTES + n_tensors * MIN_TENSOR_INFO_BYTES > left:
        raise GGUFTruncatedError(
            f"header claims {n_tensors} tensors and {n_kv} metadata keys at offset 8; "
            f"the {left} bytes left cannot hold them"
        )
    _parse_metadata(gguf, cur, n_kv)
    raw_infos, names = [], set()
    for i in range(n_tensors):
        raw = _parse_tensor_info(cur, i)
        if raw[0] in names:
            raise GGUFTensorError(f"duplicate tensor name {raw[0]!r} in tensor info at offset {raw[1]}")
        names.add(raw[0])
        raw_infos.append(raw)
    gguf.data_offset = _align(cur.pos, gguf.alignment)
    if raw_infos and gguf.data_offset > cur.size:
        raise GGUFTruncatedError(f"data section at offset {gguf.data_offset} starts past the end of the file")
    tensors = [_validate_tensor(gguf, *raw) for raw in raw_infos]
    _check_overlaps(tensors)
    gguf.tensors = {info.name: info for info in tensors}


def _parse_metadata(gguf: GGUFFile, cur: Cursor, n_kv: int) -> None:
    for i in range(n_kv):
        at = cur.pos
        key = cur.string(f"metadata key {i}")
        if key in gguf.metadata:
            raise GGUFValueError(f"duplicate metadata key {key!r} at offset {at}")
        vtype = cur.value_type(f"key {key!r}")
        value, etype = read_value(cur, vtype, key)
        gguf.metadata[key] = value
        gguf.metadata_types[key] = vtype
        if etype is not None:
            gguf.array_types[key] = etype
    if KEY_ALIGNMENT in gguf.metadata:
        alignment = gguf.metadata[KEY_ALIGNMENT]
        if gguf.metadata_types[KEY_ALIGNMENT] is not GGUFValueType.UINT32:
            raise GGUFValueError(
                f"key {KEY_ALIGNMENT!r} has type {gguf.metadata_types[KEY_ALIGNMENT].name}, expected UINT32"
            )
        if not 1 <= alignment <= MAX_ALIGNMENT or alignment & (alignment - 1):
            raise GGUFValueError(
                f"key {KEY_ALIGNMENT!r} is {alignment}: must be a power of two no larger than {MAX_ALIGNMENT}"
            )
        gguf.alignment = alignment


def _parse_tensor_info(cur: Cursor, i: int) -> tuple[str, int, tuple[int, ...], int, int]:
    at = cur.pos
    name = cur.string(f"tensor info {i} name")
    what = f"tensor {name!r} (info at offset {at})"
    n_dims = cur.u32(f"{what} n_dims")
    if not 1 <= n_dims <= MAX_DIMS:
        raise GGUFTensorError(f"{what}: n_dims is {n_dims}, must be 1..{MAX_DIMS}")
    dims = struct.unpack_from(f"<{n_dims}Q", cur.buf, cur.need(8 * n_dims, f"{what} dims"))
    type_number = cur.u32(f"{what} type")
    offset = cur.u64(f"{what} data offset")
    return name, at, dims, type_number, offset


def _validate_tensor(
    gguf: GGUFFile, name: str, at: int, dims: tuple[int, ...], type_number: int, offset: int
) -> TensorInfo:
    what = f"tensor {name!r} (info at offset {at})"
    if type_number not in GGMLType._value2member_map_:
        raise UnsupportedTypeError(f"{what}: {ggml_type_name(type_number)}")
    ggml_type = GGMLType(type_number)
    if any(d < 1 for d in dims):
        raise GGUFTensorError(f"{what}: dims {list(dims)} must all be >= 1")
    n_elements = math.prod(dims)
    if n_elements > INT64_MAX:
        raise GGUFTensorError(f"{what}: dims {list(dims)} overflow int64 ({n_elements} elements)")
    block_elems, block_bytes = BLOCK_SIZES[ggml_type]
    if dims[0] % block_elems:
        raise GGUFTensorError(
            f"{what}: row size {dims[0]} is not a multiple of the {ggml_type.name} block size {block_elems}"
        )
    nbytes = n_elements // block_elems * block_bytes
    if offset % gguf.alignment:
        raise GGUFTensorError(f"{what}: data offset {offset} is not a multiple of alignment {gguf.alignment}")
    start = gguf.data_offset + offset
    if nbytes > gguf.file_size or start > gguf.file_size - nbytes:
        raise GGUFTruncatedError(
            f"{what}: data [{start}, {start + nbytes}) runs past the end of the file ({gguf.file_size} bytes)"
        )
    shape = tuple(reversed(dims))
    return TensorInfo(name, ggml_type, tuple(dims), shape, start, nbytes, n_elements)


def _check_overlaps(tensors: list[TensorInfo]) -> None:
    by_offset = sorted(tensors, key=lambda t: (t.offset, t.nbytes))
    for prev, info in zip(by_offset, by_offset[1:], strict=False):
        if info.offset < prev.offset + prev.nbytes:
            raise GGUFTensorError(
                f"tensor {info.name!r} data at offset {info.offset} overlaps tensor {prev.name!r} "
                f"[{prev.offset}, {prev.offset + prev.nbytes})"
            )


def _align(pos: int, alignment: int) -> int:
    return (pos + alignment - 1) // alignment * alignment
