"""Thin launchers, one per kernel of `gpu/kernels/`: each checks dtype, shape and contiguity of its
device arrays, raising `InvalidInput` that names the argument, then launches on the runtime's stream."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInput


def check(arr, name: str, dtype, shape: tuple[int, ...]) -> None:
    """`arr` is a C-contiguous device array of `dtype` and `shape` (-1 in `shape`: any size)."""
    if arr is None:
        raise InvalidInput(f"{name}: missing array")
    if np.dtype(arr.dtype) != np.dtype(dtype):
        raise InvalidInput(f"{name}: dtype {arr.dtype}, expected {np.dtype(dtype)}")
    if len(arr.shape) != len(shape) or any(e not in (-1, a) for a, e in zip(arr.shape, shape, strict=True)):
        raise InvalidInput(f"{name}: shape {tuple(arr.shape)}, expected {shape}")
    if not arr.flags.c_contiguous:
        raise InvalidInput(f"{name}: not C-contiguous")


def blocks(n: int, per_block: int) -> int:
    return (n + per_block - 1) // per_block
