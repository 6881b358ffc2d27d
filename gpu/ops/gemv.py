"""gemv.cu: y (+)= x @ w.T + bias for at most 64 rows of x (decode), streaming each weight row once;
a row's result does not depend on how many rows share the launch."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInput
from ..runtime import Runtime, ptr
from . import blocks, check

MAX_ROWS = 64
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
_WARPS = 8  # per block


def gemv(rt: Runtime, y, x, w, bias=None, accumulate: bool = False) -> None:
    """y [M, N] f32 (+)= x [M, K] operand @ w [N, K].T + bias [N] f32, M <= 64, K % 8 == 0."""
    m, k = x.shape
    n = w.shape[0]
    if m > MAX_ROWS:
        raise InvalidInput(f"x: {m} rows, gemv takes at most {MAX_ROWS}")
    if k % 8:
        raise InvalidInput(f"x: K = {k} is not a multiple of 8")
    check(x, "x", rt.operand, (m, k))
    check(w, "w", rt.operand, (n, k))
    check(y, "y", np.float32, (m, n))
    if bias is not None:
        check(bias, "bias", np.float32, (n,))
    max_m = next(b for b in ROW_BUCKETS if b >= m)
    # split K over more warps when there are too few rows to keep every SM busy (never depends on M)
    ksplit = 1
    while ksplit < _WARPS and n * ksplit < 32 * rt.n_sm and k // (256 * ksplit * 2) >= 1:
        ksplit *= 2
    fn = rt.kernel("gemv", "PPPPiiiii", MAX_M=max_m)
    rt.launch(fn, (blocks(n, _WARPS // ksplit), 1, 1), (32 * _WARPS, 1, 1),
              ptr(y), ptr(x), ptr(w), ptr(bias), m, n, k, ksplit, int(accumulate))
