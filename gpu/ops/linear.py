"""A projection y (+)= x @ w.T + bias: gemv up to 64 rows (decode batches: memory-bound and
batch-invariant), tensor-core gemm for longer prompts. A Q8_0 matrix larger than the runtime's
expansion buffer (the output head of a Q8_0 model: the buffer is sized for the layers) runs as gemv
over 64 rows at a time instead of being expanded."""

from __future__ import annotations

from ..runtime import Runtime
from .dequant_q8 import Q8Matrix, expansion_room
from .gemm import gemm
from .gemv import MAX_ROWS, gemv


def linear(rt: Runtime, y, x, w, bias=None, accumulate: bool = False, preload: bool = False) -> None:
    """y [M, N] f32 = x [M, K] @ w [N, K].T + bias, added to y when `accumulate` (fused residual)."""
    m = x.shape[0]
    if m <= MAX_ROWS:
        gemv(rt, y, x, w, bias, accumulate, preload=preload)
    elif isinstance(w, Q8Matrix) and w.q.size > expansion_room(rt):
        for r0 in range(0, m, MAX_ROWS):
            gemv(rt, y[r0 : r0 + MAX_ROWS], x[r0 : r0 + MAX_ROWS], w, bias, accumulate)
    else:
        gemm(rt, y, x, w, bias, accumulate)
