"""gather_rows.cu: chosen rows of an f32 matrix (each packed prompt's last position) into a dense one."""

from __future__ import annotations

import numpy as np

from ..runtime import Runtime, ptr
from . import check


def gather_rows(rt: Runtime, out, x, rows) -> None:
    """out [k, dim] f32 = x [n, dim] f32 [rows]; rows [k] int32 on the device, each in [0, n)."""
    k, dim = out.shape
    check(out, "out", np.float32, (k, dim))
    check(x, "x", np.float32, (-1, dim))
    check(rows, "rows", np.int32, (k,))
    fn = rt.kernel("gather_rows", "PPPi")
    rt.launch(fn, (k, 1, 1), (256, 1, 1), ptr(out), ptr(x), ptr(rows), dim)
