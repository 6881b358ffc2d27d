"""Dequantisation per type against gguf-py (`gguf.quants`), plus hand-worked blocks and refusals."""

from __future__ import annotations

import re
import struct

import gguf
import numpy as np
import pytest

from gguf_loader import quants
from gguf_loader.constants import BLOCK_SIZES, GGMLType
from gguf_loader.errors import GGUFTensorError, UnsupportedTypeError

T = GGMLType
# gguf-py can quantise these; the K-quants it can only dequantise.
QUANTISABLE = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
# Byte offsets of the float16 scale fields in each block, set finite for the "sane scales" cases.
F16_FIELDS = {
    T.F16: (0,),
    T.Q4_0: (0,),
    T.Q4_1: (0, 2),
    T.Q5_0: (0,),
    T.Q5_1: (0, 2),
    T.Q8_0: (0,),
    T.Q2_K: (80, 82),
    T.Q3_K: (108,),
    T.Q4_K: (0, 2),
    T.Q5_K: (0, 2),
    T.Q6_K: (208,),
}


def reference(raw: np.ndarray, gtype: GGMLType) -> np.ndarray:
    return gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(int(gtype))).astype(np.float32).reshape(-1)


def n_elements(raw: np.ndarray, gtype: GGMLType) -> int:
    block_elems, block_bytes = BLOCK_SIZES[gtype]
    return raw.size // block_bytes * block_elems


def random_blocks(gtype: GGMLType, n_blocks: int, seed: int, sane_scales: bool) -> np.ndarray:
    """Random bytes for `n_blocks` blocks; with `sane_scales`, float16 fields hold values in [-2, 2]."""
    rng = np.random.default_rng(seed)
    block_bytes = BLOCK_SIZES[gtype][1]
    blocks = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)  # [n, block_bytes]
    if sane_scales:
        for at in F16_FIELDS.get(gtype, ()):
            scales = rng.uniform(-2, 2, size=n_blocks).astype(np.float16)  # [n]
            blocks[:, at : at + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return blocks.reshape(-1)


@pytest.mark.parametrize("gtype", QUANTISABLE, ids=lambda t: t.name)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_trip_through_gguf_py_quantize(gtype, seed):
    rng = np.random.default_rng(seed)
    rows, cols = 7, 256
    weights = (rng.standard_normal((rows, cols)) * rng.uniform(0.01, 10)).astype(np.float32)  # [rows, cols]
    weights[3] = 0.0  # an all-zero row: scale 0
    raw = gguf.quants.quantize(weights, gguf.GGMLQuantizationType(int(gtype)))
    raw = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
    ours = quants.dequantize(raw, gtype, rows * cols)
    assert ours.dtype == np.float32 and ours.shape == (rows * cols,)
    np.testing.assert_array_equal(ours, reference(raw, gtype))


@pytest.mark.parametrize("gtype", quants.SUPPORTED_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("sane_scales", [True, False], ids=["finite-scales", "any-bytes"])
def test_random_blocks_match_gguf_py(gtype, sane_scales):
    block_bytes = BLOCK_SIZES[gtype][1]
    n_blocks = quants.CHUNK_BYTES // block_bytes + 7  # crosses a chunk boundary
    raw = random_blocks(gtype, n_blocks, seed=int(gtype), sane_scales=sane_scales)
    with np.errstate(all="ignore"):
        expected = reference(raw, gtype)
    ours = quants.dequantize(raw, gtype, n_elements(raw, gtype))
    np.testing.assert_array_equal(ours, expected)  # NaN where gguf-py has NaN, equal elsewhere


def f16_bytes(x: float) -> bytes:
    return np.float16(x).tobytes()


def test_q4_0_block_by_hand():
    qs = bytes(j | (15 - j) << 4 for j in range(16))  # low nibble j, high nibble 15 - j
    raw = np.frombuffer(f16_bytes(0.5) + qs, np.uint8)
    expected = [(j - 8) * 0.5 for j in range(16)] + [(7 - j) * 0.5 for j in range(16)]
    assert quants.dequantize(raw, T.Q4_0, 32).tolist() == expected


def test_q4_1_block_by_hand():
    qs = bytes(j | (15 - j) << 4 for j in range(16))
    raw = np.frombuffer(f16_bytes(0.25) + f16_bytes(-1.0) + qs, np.uint8)
    expected = [j * 0.25 - 1 for j in range(16)] + [(15 - j) * 0.25 - 1 for j in range(16)]
    assert quants.dequantize(raw, T.Q4_1, 32).tolist() == expected


def test_q5_0_high_bits_by_hand():
    qh = struct.pack("<I", 0x0000FFFF)  # bit j → high bit of element j: set for elements 0..15
    raw = np.frombuffer(f16_bytes(1.0) + qh + bytes([0x21] * 16), np.uint8)  # low nibble 1, high 2
    assert quants.dequantize(raw, T.Q5_0, 32).tolist() == [1.0] * 16 + [-14.0] * 16


def test_q8_0_block_by_hand():
    qs = bytes(np.arange(-16, 16, dtype=np.int8).view(np.uint8))
    raw = np.frombuffer(f16_bytes(2.0) + qs, np.uint8)
    assert quants.dequantize(raw, T.Q8_0, 32).tolist() == [2.0 * v for v in range(-16, 16)]


def test_f32_is_a_zero_copy_view():
    raw = np.arange(8, dtype=np.float32).view(np.uint8)
    out = quants.dequantize(raw, T.F32, 8)
    assert np.shares_memory(out, raw) and out.tolist() == list(range(8))


def test_bf16_by_hand():
    raw = np.array([1.5, -2.0, 3.140625], dtype=np.float32).view(np.uint32) >> 16
    out = quants.dequantize(raw.astype("<u2").view(np.uint8), T.BF16, 3)
    assert out.tolist() == [1.5, -2.0, 3.140625]


@pytest.mark.parametrize(
    ("number", "name"),
    [(16, "IQ2_XXS (16)"), (34, "TQ1_0 (34)"), (15, "Q8_K (15)"), (39, "MXFP4 (39)"), (24, "I8 (24)")],
)
def test_unsupported_types_named(number, name):
    block_elems, block_bytes = BLOCK_SIZES[GGMLType(number)]
    raw = np.zeros(block_bytes, np.uint8)
    with pytest.raises(
        UnsupportedTypeError, match=f"cannot dequantise {re.escape(name)}: supported types are F32"
    ):
        quants.dequantize(raw, number, block_elems)


@pytest.mark.parametrize(("number", "name"), [(99, "unknown type 99"), (4, r"removed type Q4_2 \(4\)")])
def test_unknown_types_named(number, name):
    with pytest.raises(UnsupportedTypeError, match=name):
        quants.dequantize(np.zeros(18, np.uint8), number, 32)


def test_size_mismatches_refused():
    with pytest.raises(GGUFTensorError, match="expected 18 bytes"):
        quants.dequantize(np.zeros(17, np.uint8), T.Q4_0, 32)
    with pytest.raises(GGUFTensorError, match="33 elements is not a multiple of 32"):
        quants.dequantize(np.zeros(18, np.uint8), T.Q4_0, 33)
    with pytest.raises(GGUFTensorError, match="1-D uint8"):
        quants.dequantize(np.zeros(8, np.float32), T.F32, 8)
