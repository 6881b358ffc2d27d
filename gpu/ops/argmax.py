"""argmax.cu: greedy token ids from logits on the device."""

from __future__ import annotations

import numpy as np

from ..runtime import Runtime, ptr
from . import check


def argmax(rt: Runtime, ids, logits) -> None:
    """ids [n] int32 = first index of each row's maximum of logits [n, vocab] f32."""
    n, vocab = logits.shape
    check(logits, "logits", np.float32, (n, vocab))
    check(ids, "ids", np.int32, (n,))
    fn = rt.kernel("argmax", "PPi")
    rt.launch(fn, (n, 1, 1), (1024, 1, 1), ptr(ids), ptr(logits), vocab)
