"""argmax.cu: greedy token ids from logits on the device."""

from __future__ import annotations

import numpy as np
import pycuda.driver as cuda

from ..runtime import Runtime, ptr
from . import blocks, check

_SLICE = 8192  # logits per block


def argmax(rt: Runtime, best, logits) -> None:
    """best [n] uint64 = packed (value, index) of each row's maximum of logits [n, vocab] f32 (the first
    index on ties, as numpy); `ids_from_packed` turns the copied-back values into token ids."""
    n, vocab = logits.shape
    check(logits, "logits", np.float32, (n, vocab))
    check(best, "best", np.uint64, (n,))
    cuda.memset_d32_async(ptr(best), 0, 2 * n, rt.stream)
    fn = rt.kernel("argmax", "PPi")
    rt.launch(fn, (blocks(vocab, _SLICE), n, 1), (256, 1, 1), ptr(best), ptr(logits), vocab)


def ids_from_packed(best: np.ndarray) -> np.ndarray:
    """Token ids [n] int64 from the packed maxima that `argmax` wrote."""
    low = np.asarray(best, dtype=np.uint64) & np.uint64(0xFFFFFFFF)  # ~index
    return (np.uint64(0xFFFFFFFF) - low).astype(np.int64)
