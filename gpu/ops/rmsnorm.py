"""rmsnorm.cu: RMSNorm of f32 rows into the operand type."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInput
from ..runtime import Runtime, ptr
from . import check


def rmsnorm(rt: Runtime, out, x, weight, eps: float, threads: int = 1024) -> None:
    """out [n, dim] operand = x [n, dim] f32 / rms * weight [dim] f32, one block of `threads` per row.

    The block size sets the order of the sum of squares: pass `gemv.norm_threads` of the projection that
    reads `out` for rows bit-identical to that gemv's fused norm."""
    n, dim = x.shape
    if threads % 32 or not 32 <= threads <= 1024:
        raise InvalidInput(f"threads {threads}: a multiple of 32 in 32..1024")
    check(x, "x", np.float32, (n, dim))
    check(out, "out", rt.operand, (n, dim))
    check(weight, "weight", np.float32, (dim,))
    fn = rt.kernel("rmsnorm", "PPPif")
    rt.launch(fn, (n, 1, 1), (threads, 1, 1), ptr(out), ptr(x), ptr(weight), dim, np.float32(eps))
