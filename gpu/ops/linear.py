"""A projection y (+)= x @ w.T + bias: gemv up to 64 rows (decode batches: memory-bound and
batch-invariant), tensor-core gemm for longer prompts."""

from __future__ import annotations

from ..runtime import Runtime
from .gemm import gemm
from .gemv import MAX_ROWS, gemv


def linear(rt: Runtime, y, x, w, bias=None, accumulate: bool = False) -> None:
    """y [M, N] f32 = x [M, K] @ w [N, K].T + bias, added to y when `accumulate` (fused residual)."""
    if x.shape[0] <= MAX_ROWS:
        gemv(rt, y, x, w, bias, accumulate)
    else:
        gemm(rt, y, x, w, bias, accumulate)
