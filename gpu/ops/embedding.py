"""embedding.cu: rows of the token table (plus learned positions) into the f32 residual stream."""

from __future__ import annotations

import numpy as np

from ..runtime import Runtime, ptr
from . import check
from .dequant_q8 import Q8Matrix, weight_pointers


def embedding(rt: Runtime, out, ids, table, pos, pos_table=None, fed=None) -> None:
    """out [n, dim] f32 = table[ids] (+ pos_table[pos]); ids, pos [n] int32 on the device. With `fed`
    (int32 on the device), an id -(j + 1) stands for fed[j], a token picked on the device by an earlier
    step (`gpu.reference.feed_ids` is the twin of that lookup). `table` may be a Q8Matrix."""
    n, dim = out.shape
    check(out, "out", np.float32, (n, dim))
    check(ids, "ids", np.int32, (n,))
    check(pos, "pos", np.int32, (n,))
    rows = weight_pointers(rt, table, "table", (-1, dim))
    q8 = isinstance(table, Q8Matrix)
    if pos_table is not None:
        check(pos_table, "pos_table", rt.operand, (-1, dim))
    if fed is not None:
        check(fed, "fed", np.int32, (-1,))
    fn = rt.kernel("embedding", "PPPPPPPi", **({"TABLE_Q8": 1} if q8 else {}))
    rt.launch(fn, (n, 1, 1), (256, 1, 1), ptr(out), ptr(ids), ptr(fed), *rows, ptr(pos), ptr(pos_table), dim)
