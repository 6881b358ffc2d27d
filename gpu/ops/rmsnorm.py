"""rmsnorm.cu: RMSNorm of f32 rows into the operand type."""

from __future__ import annotations

import numpy as np

from ..runtime import Runtime, ptr
from . import check


def rmsnorm(rt: Runtime, out, x, weight, eps: float) -> None:
    """out [n, dim] operand = x [n, dim] f32 / rms * weight [dim] f32."""
    n, dim = x.shape
    check(x, "x", np.float32, (n, dim))
    check(out, "out", rt.operand, (n, dim))
    check(weight, "weight", np.float32, (dim,))
    fn = rt.kernel("rmsnorm", "PPPif")
    rt.launch(fn, (n, 1, 1), (1024, 1, 1), ptr(out), ptr(x), ptr(weight), dim, np.float32(eps))
