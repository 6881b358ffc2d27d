"""Device arrays for the kernel tests (`pytest -m cuda`): inputs rounded to the operand type, outputs
poisoned with NaN before a launch, results back on the host, and the relative error they are judged by.
The runtime they take is conftest's `rt` fixture (f16 and bf16)."""

from __future__ import annotations

import numpy as np

NAN_BITS = {"f16": 0x7E00, "bf16": 0x7FC0}


def rel_err(out, want) -> float:
    assert np.isfinite(out).all(), "NaN/inf in output: an element was not written"
    return float(np.linalg.norm(out.astype(np.float64) - want) / np.linalg.norm(want))


def operand(rt, x):
    """Round f32 values to the operand type: (device array, the rounded values as f32)."""
    from gpu.runtime import from_operand, to_operand

    stored = to_operand(x, rt.dtype)
    return rt.to_device(stored, "test"), from_operand(stored, rt.dtype)


def f32(rt, x):
    return rt.to_device(np.asarray(x, dtype=np.float32), "test")


def empty(rt, shape, dtype=None):
    """A poisoned (NaN) device array of the operand type (dtype None) or float32."""
    import pycuda.driver as cuda

    if dtype is None:
        arr = rt.empty(shape, rt.operand, "test")
        cuda.memset_d16(arr.gpudata, NAN_BITS[rt.dtype], arr.size)
    else:
        arr = rt.empty(shape, np.float32, "test")
        cuda.memset_d32(arr.gpudata, 0x7FC00000, arr.size)
    return arr


def get(rt, arr):
    from gpu.runtime import from_operand

    rt.synchronize()
    host = arr.get()
    return from_operand(host, rt.dtype) if host.dtype == rt.operand else host


def ints(rt, values):
    return rt.to_device(np.asarray(values, dtype=np.int32), "test")
