"""layernorm.cu: LayerNorm (weight and bias) of f32 rows into the operand type."""

from __future__ import annotations

import numpy as np

from ..runtime import Runtime, ptr
from . import check


def layernorm(rt: Runtime, out, x, weight, bias, eps: float) -> None:
    """out [n, dim] operand = (x - mean) / std * weight + bias; x [n, dim] f32, weight/bias [dim] f32."""
    n, dim = x.shape
    check(x, "x", np.float32, (n, dim))
    check(out, "out", rt.operand, (n, dim))
    check(weight, "weight", np.float32, (dim,))
    check(bias, "bias", np.float32, (dim,))
    fn = rt.kernel("layernorm", "PPPPif")
    rt.launch(fn, (n, 1, 1), (1024, 1, 1), ptr(out), ptr(x), ptr(weight), ptr(bias), dim, np.float32(eps))
