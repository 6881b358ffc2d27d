"""K-quant block kernels (super-blocks of QK_K = 256 values), vectorised over blocks.

Layouts as in ggml's `block_q*_K` structs. Within a super-block, values are grouped in sub-blocks
of 16 (Q2_K, Q3_K, Q6_K) or 32 (Q4_K, Q5_K) that each carry a scale (and Q2/Q4/Q5 a min).
Kernel signature: `kernel(blocks [n, block_bytes] uint8, out [n, 256] float32)`.
"""

from __future__ import annotations

import numpy as np

from gguf_loader.constants import GGMLType

_SHIFTS_2BIT = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)  # [1, 1, 4, 1]
_SHIFTS_HMASK = np.arange(8, dtype=np.uint8).reshape(1, 2, 4, 1)  # [1, half, j, 1]
_SHIFTS_Q3_HIGH = np.repeat(np.array([0, 2, 4, 6], dtype=np.uint8), 4)  # [16]


def f16_column(blocks: np.ndarray, start: int) -> np.ndarray:
    """The float16 at byte `start` of each block, as float32 [n_blocks, 1]."""
    return blocks[:, start : start + 2].view("<f2").astype(np.float32)


def _crumbs(qs: np.ndarray) -> np.ndarray:
    """[n, 64] bytes of 2-bit values → [n, 2, 4, 32]: (half, shift j, byte l), as ggml walks them."""
    qs = qs.reshape(-1, 2, 1, 32)  # [n, half, 1, 32]
    return (qs >> _SHIFTS_2BIT) & np.uint8(3)  # [n, half, j, 32]


def _scale_min_k4(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """12 packed bytes → eight 6-bit scales and eight 6-bit mins ([n, 8] uint8 each)."""
    sc = np.empty((scales.shape[0], 8), dtype=np.uint8)
    mn = np.empty((scales.shape[0], 8), dtype=np.uint8)
    np.bitwise_and(scales[:, 0:4], 63, out=sc[:, :4])
    np.bitwise_and(scales[:, 4:8], 63, out=mn[:, :4])
    sc[:, 4:] = (scales[:, 8:12] & 0x0F) | ((scales[:, 0:4] >> 6) << 4)
    mn[:, 4:] = (scales[:, 8:12] >> 4) | ((scales[:, 4:8] >> 6) << 4)
    return sc, mn


def _q2_k(blocks: np.ndarray, out: np.ndarray) -> None:
    # scales[16] | qs[64] | d | dmin
    n = blocks.shape[0]
    scales = blocks[:, 0:16]  # [n, 16]: low nibble scale, high nibble min, one per 16 values
    d, dmin = f16_column(blocks, 80), f16_column(blocks, 82)  # [n, 1]
    dl = d * (scales & 0x0F)  # [n, 16]
    ml = dmin * (scales >> 4)  # [n, 16]
    q = _crumbs(blocks[:, 16:80]).reshape(n, 16, 16)  # [n, sub, 16]
    y = out.reshape(n, 16, 16)
    np.multiply(q, dl[:, :, None], out=y)
    y -= ml[:, :, None]


def _q3_k(blocks: np.ndarray, out: np.ndarray) -> None:
    # hmask[32] | qs[64] | scales[12] | d
    n = blocks.shape[0]
    hmask = blocks[:, None, None, 0:32]  # [n, 1, 1, 32]
    packed = blocks[:, 96:108]  # [n, 12]
    low = np.concatenate((packed[:, 0:8] & 0x0F, packed[:, 0:8] >> 4), axis=1)  # [n, 16]
    high = (np.tile(packed[:, 8:12], 4) >> _SHIFTS_Q3_HIGH) & 3  # [n, 16]
    sc = (low | (high << 4)).view(np.int8) - np.int8(32)  # [n, 16]
    dl = f16_column(blocks, 108) * sc  # [n, 16]
    q = _crumbs(blocks[:, 32:96])  # [n, half, j, 32]
    q |= ((hmask >> _SHIFTS_HMASK) & 1) << 2  # hmask bit set → no -4 offset
    q = q.view(np.int8) - np.int8(4)
    np.multiply(q.reshape(n, 16, 16), dl[:, :, None], out=out.reshape(n, 16, 16))


def _q4_k(blocks: np.ndarray, out: np.ndarray) -> None:
    # d | dmin | scales[12] | qs[128]
    n = blocks.shape[0]
    sc, mn = _scale_min_k4(blocks[:, 4:16])  # [n, 8]
    dl = f16_column(blocks, 0) * sc  # [n, 8]
    ml = f16_column(blocks, 2) * mn  # [n, 8]
    qs = blocks[:, 16:144].reshape(n, 4, 1, 32)  # [n, chunk, 1, 32]
    q = np.concatenate((qs & 0x0F, qs >> 4), axis=2).reshape(n, 8, 32)  # [n, sub, 32]
    y = out.reshape(n, 8, 32)
    np.multiply(q, dl[:, :, None], out=y)
    y -= ml[:, :, None]


def _q5_k(blocks: np.ndarray, out: np.ndarray) -> None:
    # d | dmin | scales[12] | qh[32] | qs[128]
    n = blocks.shape[0]
    sc, mn = _scale_min_k4(blocks[:, 4:16])  # [n, 8]
    dl = f16_column(blocks, 0) * sc  # [n, 8]
    ml = f16_column(blocks, 2) * mn  # [n, 8]
    qs = blocks[:, 48:176].reshape(n, 4, 1, 32)  # [n, chunk, 1, 32]
    q = np.concatenate((qs & 0x0F, qs >> 4), axis=2).reshape(n, 8, 32)  # [n, sub, 32]
    bits = np.unpackbits(blocks[:, 16:48, None], axis=2, bitorder="little")  # [n, 32, sub]
    q |= bits.transpose(0, 2, 1) << 4
    y = out.reshape(n, 8, 32)
    np.multiply(q, dl[:, :, None], out=y)
    y -= ml[:, :, None]


def _q6_k(blocks: np.ndarray, out: np.ndarray) -> None:
    # ql[128] | qh[64] | scales[16] (int8) | d
    n = blocks.shape[0]
    ql = blocks[:, 0:128].reshape(n, 2, 2, 32)  # [n, half, k % 2, 32]
    q = np.concatenate((ql & 0x0F, ql >> 4), axis=2)  # [n, half, k, 32]
    qh = blocks[:, 128:192].reshape(n, 2, 1, 32)  # [n, half, 1, 32]
    q |= ((qh >> _SHIFTS_2BIT) & 3) << 4
    q = q.view(np.int8) - np.int8(32)
    dl = f16_column(blocks, 208) * blocks[:, 192:208].view(np.int8)  # [n, 16]
    np.multiply(q.reshape(n, 16, 16), dl[:, :, None], out=out.reshape(n, 16, 16))


BLOCK_KERNELS = {
    GGMLType.Q2_K: _q2_k,
    GGMLType.Q3_K: _q3_k,
    GGMLType.Q4_K: _q4_k,
    GGMLType.Q5_K: _q5_k,
    GGMLType.Q6_K: _q6_k,
}
