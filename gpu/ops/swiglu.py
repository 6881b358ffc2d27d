"""swiglu.cu: silu(gate) * up from a fused projection whose columns interleave gate and up."""

from __future__ import annotations

import numpy as np

from ..runtime import Runtime, ptr
from . import blocks, check


def swiglu(rt: Runtime, out, gate_up) -> None:
    """out [n, hidden] operand = silu(gate_up[:, 0::2]) * gate_up[:, 1::2]; gate_up f32 [n, 2 hidden]."""
    n, hidden = out.shape
    check(out, "out", rt.operand, (n, hidden))
    check(gate_up, "gate_up", np.float32, (n, 2 * hidden))
    fn = rt.kernel("swiglu", "PPi")
    rt.launch(fn, (blocks(hidden, 256), n, 1), (256, 1, 1), ptr(out), ptr(gate_up), hidden)
