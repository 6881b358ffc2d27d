"""gemm.cu: y (+)= a @ w.T + bias on tensor cores, for prompts longer than gemv takes."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInput
from ..runtime import Runtime, ptr
from . import blocks, check


def _tiles(rt: Runtime, m: int, n: int) -> tuple[int, int, int, int]:
    """(BM, BN, WM, WN): large tiles when there are enough of them to fill every SM, else smaller."""
    if blocks(m, 128) * blocks(n, 128) >= rt.n_sm:
        return 128, 128, 2, 4
    if m <= 32:
        return 32, 64, 2, 2
    return 64, 64, 2, 2


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
    fn = rt.kernel("gemm", "PPPPiiii", BM=bm, BN=bn, WM=wm, WN=wn)
    rt.launch(fn, (blocks(n, bn), blocks(m, bm), 1), (32 * wm * wn, 1, 1),
              ptr(y), ptr(a), ptr(w), ptr(bias), m, n, k, int(accumulate))
