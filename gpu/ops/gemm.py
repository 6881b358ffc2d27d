"""gemm.cu: y (+)= a @ w.T + bias on tensor cores, for prefill and batched decode."""

from __future__ import annotations

import numpy as np
import pycuda.driver as cuda

from ..errors import InvalidInput
from ..runtime import Runtime, ptr
from . import blocks, check

_BK = 32


def _tiles(rt: Runtime, m: int, n: int) -> tuple[int, int, int, int]:
    """(BM, BN, WM, WN): the smallest M tile that covers a decode batch, large tiles for big prefills."""
    if m <= 32:
        return 32, 64, 2, 2
    if m <= 64 or blocks(m, 128) * blocks(n, 128) < rt.n_sm:
        return 64, 64, 2, 2
    return 128, 128, 2, 4


def gemm(rt: Runtime, y, a, w, bias=None, accumulate: bool = False) -> None:
    """y [M, N] f32 (+)= a [M, K] operand @ w [N, K].T + bias [N] f32; K % 8 == 0."""
    m, k = a.shape
    n = w.shape[0]
    if k % 8:
        raise InvalidInput(f"a: K = {k} is not a multiple of 8")
    check(a, "a", rt.operand, (m, k))
    check(w, "w", rt.operand, (n, k))
    check(y, "y", np.float32, (m, n))
    if bias is not None:
        check(bias, "bias", np.float32, (n,))
    bm, bn, wm, wn = _tiles(rt, m, n)
    grid_mn = blocks(m, bm) * blocks(n, bn)
    k_tiles = blocks(k, _BK)
    ksplit = 1
    if grid_mn < rt.n_sm:  # too few tiles to fill the GPU: split K, partial sums added atomically
        ksplit = max(1, min(8, blocks(2 * rt.n_sm, grid_mn), k_tiles // 4))
        ksplit = blocks(k_tiles, blocks(k_tiles, ksplit))  # no empty z-slices
    if ksplit > 1 and not accumulate:
        cuda.memset_d32_async(ptr(y), 0, m * n, rt.stream)
    fn = rt.kernel("gemm", "PPPPiiii", BM=bm, BN=bn, WM=wm, WN=wn)
    rt.launch(fn, (blocks(n, bn), blocks(m, bm), ksplit), (32 * wm * wn, 1, 1),
              ptr(y), ptr(a), ptr(w), ptr(bias), m, n, k, int(accumulate or ksplit > 1))
