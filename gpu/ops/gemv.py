"""gemv.cu: y (+)= x @ w.T + bias for at most 64 rows of x (decode batches, short prompts): weights
streamed once into tensor-core fragments; a row's result does not depend on how many rows share the
launch (batch invariance)."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInput
from ..runtime import Runtime, ptr
from . import blocks, check

MAX_ROWS = 64
ROW_BUCKETS = (8, 16, 32, 64)
_WARPS = 16  # per block; each warp streams 8 weight rows


def ksplit_for(rt: Runtime, n: int, k: int) -> int:
    """Warps per group of 8 weight rows: the most (a power of two <= 16) that still fits every warp of the
    launch on the GPU at once (16 per SM at this kernel's registers), each warp keeping >= 2 k blocks of
    32. A function of N and K only, never of M."""
    groups = blocks(n, 8)
    ksplit = 1
    while ksplit < _WARPS and groups * ksplit * 2 <= 16 * rt.n_sm and k >= 32 * 2 * ksplit * 2:
        ksplit *= 2
    return ksplit


def gemv(rt: Runtime, y, x, w, bias=None, accumulate: bool = False, swiglu: bool = False) -> None:
    """y [M, N] f32 (+)= x [M, K] operand @ w [N, K].T + bias [N] f32, M <= 64, K % 8 == 0.

    swiglu: x is instead the f32 gate|up projection [M, 2K], and silu(gate) * up is the operand."""
    m, k = x.shape[0], w.shape[1]
    n = w.shape[0]
    if m > MAX_ROWS:
        raise InvalidInput(f"x: {m} rows, gemv takes at most {MAX_ROWS}")
    if k % 8:
        raise InvalidInput(f"x: K = {k} is not a multiple of 8")
    check(x, "x", np.float32 if swiglu else rt.operand, (m, 2 * k if swiglu else k))
    check(w, "w", rt.operand, (n, k))
    check(y, "y", np.float32, (m, n))
    if bias is not None:
        check(bias, "bias", np.float32, (n,))
    max_m = next(b for b in ROW_BUCKETS if b >= m)
    ksplit = ksplit_for(rt, n, k)
    fn = rt.kernel("gemv", "PPPPiiiii", MAX_M=max_m, X_SWIGLU=int(swiglu))
    rt.launch(fn, (blocks(blocks(n, 8), _WARPS // ksplit), 1, 1), (32 * _WARPS, 1, 1),
              ptr(y), ptr(x), ptr(w), ptr(bias), m, n, k, ksplit, int(accumulate))
