"""gelu.cu: tanh-approximated GELU of f32 values into the operand type."""

from __future__ import annotations

import numpy as np

from ..runtime import Runtime, ptr
from . import blocks, check


def gelu(rt: Runtime, out, x) -> None:
    """out operand = gelu(x f32), same shape."""
    check(x, "x", np.float32, tuple(out.shape))
    check(out, "out", rt.operand, tuple(x.shape))
    n = int(x.size)
    fn = rt.kernel("gelu", "PPi")
    rt.launch(fn, (min(blocks(n, 256), 8 * rt.n_sm), 1, 1), (256, 1, 1), ptr(out), ptr(x), n)
