"""Vectorised numpy dequantisation of ggml tensor data to float32.

Each block kernel takes `blocks` ([n_blocks, block_bytes] uint8) and writes `out`
([n_blocks, block_elems] float32); `dequantize` runs it over chunks of blocks so temporaries stay
cache-sized. Arithmetic follows ggml's reference order (`d * q`, `d * q + m`), in float32.
The K-quant kernels live in `quants_k.py`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gguf_loader import quants_k
from gguf_loader.constants import BLOCK_SIZES, GGMLType, ggml_type_name
from gguf_loader.errors import GGUFTensorError, UnsupportedTypeError
from gguf_loader.quants_k import f16_column

Kernel = Callable[[np.ndarray, np.ndarray], None]

CHUNK_BYTES = 1 << 18  # quantised bytes per kernel call; keeps float32 temporaries in L2


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """[n, 16] packed bytes → [n, 32] values: low nibbles first, then high nibbles (ggml order)."""
    q = np.empty((qs.shape[0], 32), dtype=np.uint8)
    np.bitwise_and(qs, 0x0F, out=q[:, :16])
    np.right_shift(qs, 4, out=q[:, 16:])
    return q


def _high_bits(qh: np.ndarray) -> np.ndarray:
    """[n, 4] little-endian uint32 bit masks → [n, 32] bit j of each, shifted to 0x10."""
    return np.unpackbits(qh, axis=1, bitorder="little") << 4


def _q4_0(blocks: np.ndarray, out: np.ndarray) -> None:
    d = f16_column(blocks, 0)  # [n, 1]
    q = _nibbles(blocks[:, 2:18]).view(np.int8) - np.int8(8)  # [n, 32]
    np.multiply(q, d, out=out)


def _q4_1(blocks: np.ndarray, out: np.ndarray) -> None:
    d, m = f16_column(blocks, 0), f16_column(blocks, 2)  # [n, 1]
    np.multiply(_nibbles(blocks[:, 4:20]), d, out=out)  # [n, 32]
    out += m


def _q5_0(blocks: np.ndarray, out: np.ndarray) -> None:
    d = f16_column(blocks, 0)  # [n, 1]
    q = _nibbles(blocks[:, 6:22])  # [n, 32]
    q |= _high_bits(blocks[:, 2:6])
    np.multiply(q.view(np.int8) - np.int8(16), d, out=out)


def _q5_1(blocks: np.ndarray, out: np.ndarray) -> None:
    d, m = f16_column(blocks, 0), f16_column(blocks, 2)  # [n, 1]
    q = _nibbles(blocks[:, 8:24])  # [n, 32]
    q |= _high_bits(blocks[:, 4:8])
    np.multiply(q, d, out=out)
    out += m


def _q8_0(blocks: np.ndarray, out: np.ndarray) -> None:
    d = f16_column(blocks, 0)  # [n, 1]
    np.multiply(blocks[:, 2:34].view(np.int8), d, out=out)  # [n, 32]


BLOCK_KERNELS: dict[GGMLType, Kernel] = {
    GGMLType.Q4_0: _q4_0,
    GGMLType.Q4_1: _q4_1,
    GGMLType.Q5_0: _q5_0,
    GGMLType.Q5_1: _q5_1,
    GGMLType.Q8_0: _q8_0,
    **quants_k.BLOCK_KERNELS,
}
F32, F16, BF16 = GGMLType.F32, GGMLType.F16, GGMLType.BF16  # module constants: enum lookups are slow
FLOAT_TYPES = (F32, F16, BF16)
SUPPORTED_TYPES: tuple[GGMLType, ...] = (*FLOAT_TYPES, *BLOCK_KERNELS)


_U8, _U16 = np.dtype(np.uint8), np.dtype("<u2")
_F32, _F16 = np.dtype("<f4"), np.dtype("<f2")


def _as_type(ggml_type: int) -> GGMLType:
    if type(ggml_type) is GGMLType:
        return ggml_type
    if ggml_type not in GGMLType._value2member_map_:
        raise UnsupportedTypeError(f"cannot dequantise {ggml_type_name(int(ggml_type))}")
    return GGMLType(ggml_type)


def dequantize(raw: np.ndarray, ggml_type: int, n_elements: int) -> np.ndarray:
    """Dequantise `raw` (uint8 tensor data) holding `n_elements` values of `ggml_type` to float32 [n].

    F32 data comes back as a zero-copy view of `raw`; every other type as a new array.
    """
    if ggml_type is F32 and raw.dtype is _U8 and raw.ndim == 1 and raw.size == 4 * n_elements:
        return raw.view(_F32)  # the common small-tensor case, without the general checks below
    gtype = _as_type(ggml_type)
    if gtype not in SUPPORTED_TYPES:
        supported = ", ".join(t.name for t in SUPPORTED_TYPES)
        raise UnsupportedTypeError(
            f"cannot dequantise {ggml_type_name(gtype)}: supported types are {supported}"
        )
    block_elems, block_bytes = BLOCK_SIZES[gtype]
    if n_elements % block_elems:
        raise GGUFTensorError(f"{gtype.name}: {n_elements} elements is not a multiple of {block_elems}")
    n_blocks = n_elements // block_elems
    if raw.dtype != np.uint8 or raw.ndim != 1 or raw.size != n_blocks * block_bytes:
        raise GGUFTensorError(
            f"{gtype.name}: expected {n_blocks * block_bytes} bytes of 1-D uint8 data for "
            f"{n_elements} elements, got {raw.size} of {raw.dtype} with shape {raw.shape}"
        )
    if gtype is F32:
        return raw.view(_F32)
    if gtype is F16:
        return raw.view(_F16).astype(np.float32)
    if gtype is BF16:
        return (raw.view(_U16).astype(np.uint32) << 16).view(np.float32)
    kernel = BLOCK_KERNELS[gtype]
    blocks = raw.reshape(n_blocks, block_bytes)  # [n_blocks, block_bytes]
    out = np.empty((n_blocks, block_elems), dtype=np.float32)  # [n_blocks, block_elems]
    step = max(1, CHUNK_BYTES // block_bytes)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf scales propagate, as in ggml
        for start in range(0, n_blocks, step):
            kernel(blocks[start : start + step], out[start : start + step])
    return out.reshape(-1)
