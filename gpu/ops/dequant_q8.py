"""Q8_0 matrices on the device (`Q8Matrix`) and dequant_q8.cu, which expands one into the operand type for
the tensor-core gemm. The expansion goes to one buffer per runtime, reserved at load for the largest
layer matrix (`reserve`), so a Q8_0 model costs about 1.06 bytes a weight plus that one copy."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidInput
from ..runtime import Runtime, ptr
from . import blocks, check

_copies: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # rt -> [buffers]; the last is current


@dataclass(frozen=True)
class Q8Matrix:
    """A [N, K] weight matrix as Q8_0: quants int8 [N, K], one f16 scale per 32 of a row [N, K / 32]."""

    q: Any
    d: Any

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.q.shape)

    @property
    def nbytes(self) -> int:
        return self.q.nbytes + self.d.nbytes


def check_q8(w, name: str, shape: tuple[int, int]) -> None:
    """`w` is a Q8Matrix of `shape` (-1: any size) with matching scales."""
    if not isinstance(w, Q8Matrix):
        raise InvalidInput(f"{name}: expected a Q8Matrix, got {type(w).__name__}")
    check(w.q, f"{name}.q", np.int8, shape)
    n, k = w.q.shape
    if k % 32:
        raise InvalidInput(f"{name}: K = {k} is not a multiple of 32")
    check(w.d, f"{name}.d", np.float16, (n, k // 32))


def check_weight(rt: Runtime, w, name: str, shape: tuple[int, int]) -> None:
    """`w` is an operand array or a Q8Matrix of `shape` (-1: any size)."""
    if isinstance(w, Q8Matrix):
        check_q8(w, name, shape)
    else:
        check(w, name, rt.operand, shape)


def weight_pointers(rt: Runtime, w, name: str, shape: tuple[int, int]) -> tuple[int, int]:
    """Check `w` (`check_weight`) and return the two pointers a kernel reads it by: (quants, scales) of a
    Q8Matrix, (the array, 0) of an operand array."""
    check_weight(rt, w, name, shape)
    return (ptr(w.q), ptr(w.d)) if isinstance(w, Q8Matrix) else (ptr(w), 0)


def dequant_q8(rt: Runtime, out, w: Q8Matrix) -> None:
    """out [N, K] operand = d * q of every block, rounded to the operand type."""
    check_q8(w, "w", (-1, -1))
    check(out, "out", rt.operand, w.shape)
    groups = w.q.size // 8
    fn = rt.kernel("dequant_q8", "PPPq")
    rt.launch(fn, (blocks(groups, 256), 1, 1), (256, 1, 1), ptr(out), ptr(w.q), ptr(w.d), np.int64(groups))


def reserve(rt: Runtime, n_weights: int) -> None:
    """Make the runtime's expansion buffer hold at least `n_weights` operands (done at load, so a CUDA graph
    capture never allocates)."""
    held = _copies.setdefault(rt, [])
    if not held or held[-1].size < n_weights:
        held.append(rt.empty((n_weights,), rt.operand, "scratch"))  # older ones stay: a graph may use them


def expansion_room(rt: Runtime) -> int:
    """Operands the runtime's expansion buffer holds (0 before `reserve`)."""
    held = _copies.get(rt)
    return held[-1].size if held else 0


def expanded(rt: Runtime, w: Q8Matrix):
    """`w` dequantised into the runtime's expansion buffer (valid until the next call): [N, K] operand."""
    n, k = w.shape
    reserve(rt, n * k)
    out = _copies[rt][-1][: n * k].reshape(n, k)
    dequant_q8(rt, out, w)
    return out
