"""gemv.cu: y (+)= x @ w.T + bias for at most 64 rows of x (decode batches, short prompts): weights
streamed once into tensor-core fragments; a row's result does not depend on how many rows share the
launch (batch invariance)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidInput
from ..runtime import Runtime, ptr
from . import blocks, check
from .dequant_q8 import Q8Matrix, weight_pointers

MAX_ROWS = 64
ROW_BUCKETS = (8, 16, 32, 64)
_MAX_KSPLIT = 16  # warps per block: one group of 8 weight rows, its K split over the block's warps
_RESIDENT_WARPS = 20  # per SM, about what this kernel's registers allow
# row buckets up to this size software-pipeline their weight loads (the same bits); off: on an H200 it cost
# 9% of batch-1 decode (Qwen2.5-0.5B shape) and 7% (Phi-3-mini shape), measured by bench/gpu_bench.py;
# $ORCD_GEMV_PIPELINE_MAX_M sets it (an A/B switch for benchmarks)
PIPELINE_MAX_M = int(os.environ.get("ORCD_GEMV_PIPELINE_MAX_M", "0"))
# how gemv.cu reads weights (its -D LOAD): 2 with a 256-byte L2 prefetch, 0 without (an A/B switch)
LOAD = int(os.environ.get("ORCD_GEMV_LOAD", "2"))


@dataclass(frozen=True)
class RopeKV:
    """Where the fused q|k|v gemv's epilogue writes: rotated q, and k, v appended to one layer's caches
    at each row's (slot, pos). Rotated pairs must be adjacent columns (NEOX rows permuted at load)."""

    q_out: Any  # [M, n_heads, head_dim] operand
    k_cache: Any  # [n_slots, n_kv_heads, max_ctx, head_dim] operand
    v_cache: Any
    slots: Any  # [M] int32
    pos: Any  # [M] int32
    rope_dim: int  # 0: no rotation
    theta: float = 10000.0
    freq_factors: Any = None  # [rope_dim / 2] f32
    attn_factor: float = 1.0


def ksplit_for(rt: Runtime, n: int, k: int) -> int:
    """Warps per group of 8 weight rows: the most (a power of two <= 16) that still lets every warp of the
    launch be resident at once, each warp keeping >= 2 k blocks of 32. A function of N and K only, never
    of M, so the order of the additions is the same for every batch."""
    groups = blocks(n, 8)
    ksplit = 1
    while (ksplit < _MAX_KSPLIT and groups * ksplit * 2 <= _RESIDENT_WARPS * rt.n_sm
           and k >= 32 * 2 * ksplit * 2):
        ksplit *= 2
    return ksplit


def gemv(rt: Runtime, y, x, w, bias=None, accumulate: bool = False, swiglu: bool = False,
         rope: RopeKV | None = None, preload: bool = False) -> None:
    """y [M, N] f32 (+)= x [M, K] operand @ w [N, K].T + bias [N] f32, M <= 64, K % 8 == 0. w is an operand
    array or a Q8Matrix (read as Q8_0 blocks: the same bits as its dequantised copy).

    swiglu: w's rows interleave gate and up, and y [M, N / 2] (operand type) = silu(gate) * up.
    rope: w is the fused q|k|v projection; y is unused and the epilogue writes `rope`'s targets.
    preload: the first weights are loaded before the programmatic wait (the same bits)."""
    m, k = x.shape
    n = w.shape[0]
    if m > MAX_ROWS:
        raise InvalidInput(f"x: {m} rows, gemv takes at most {MAX_ROWS}")
    if k % 8:
        raise InvalidInput(f"x: K = {k} is not a multiple of 8")
    if swiglu and (n % 2 or accumulate):
        raise InvalidInput(f"swiglu output: N = {n} must be even and y cannot accumulate")
    check(x, "x", rt.operand, (m, k))
    weights = weight_pointers(rt, w, "w", (n, k))
    q8 = isinstance(w, Q8Matrix)
    if rope is None:
        check(y, "y", rt.operand if swiglu else np.float32, (m, n // 2 if swiglu else n))
        rope_args = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, np.float32(0), np.float32(0), 0)
    else:
        rope_args = _rope_args(rt, rope, m, n)
    if bias is not None:
        check(bias, "bias", np.float32, (n,))
    max_m = next(b for b in ROW_BUCKETS if b >= m)
    ksplit = ksplit_for(rt, n, k)
    pipe = int(max_m <= PIPELINE_MAX_M)
    defines = dict(MAX_M=max_m, EPI_SWIGLU=int(swiglu), EPI_ROPE=int(rope is not None), PIPE=pipe, LOAD=LOAD)
    if q8:
        defines["WQ8"] = 1
    if preload:
        defines["PRELOAD"] = 1
    fn = rt.kernel("gemv", "PPPPPiiiiiPPPPPPiiiiffi", **defines)
    shared = ksplit * blocks(max_m, 16) * 4 * 32 * 4 if ksplit > 1 else 0  # partial sums, f32
    rt.launch(fn, (blocks(n, 8), 1, 1), (32 * ksplit, 1, 1), ptr(y), ptr(x), *weights, ptr(bias), m, n, k,
              ksplit, int(accumulate), *rope_args, shared=shared)


def _rope_args(rt: Runtime, r: RopeKV, m: int, n: int) -> tuple:
    _, n_heads, head_dim = r.q_out.shape
    n_slots, n_kv_heads, max_ctx, _ = r.k_cache.shape
    if n != (n_heads + 2 * n_kv_heads) * head_dim:
        raise InvalidInput(f"w: {n} rows, expected (n_heads + 2 n_kv_heads) * head_dim = "
                           f"{(n_heads + 2 * n_kv_heads) * head_dim}")
    if r.rope_dim % 2 or r.rope_dim > head_dim or head_dim % 2:
        raise InvalidInput(f"rope_dim {r.rope_dim} must be even and <= head_dim {head_dim}")
    check(r.q_out, "q_out", rt.operand, (m, n_heads, head_dim))
    check(r.k_cache, "k_cache", rt.operand, (n_slots, n_kv_heads, max_ctx, head_dim))
    check(r.v_cache, "v_cache", rt.operand, (n_slots, n_kv_heads, max_ctx, head_dim))
    check(r.slots, "slots", np.int32, (m,))
    check(r.pos, "pos", np.int32, (m,))
    if r.freq_factors is not None:
        check(r.freq_factors, "freq_factors", np.float32, (r.rope_dim // 2,))
    return (ptr(r.q_out), ptr(r.k_cache), ptr(r.v_cache), ptr(r.slots), ptr(r.pos), ptr(r.freq_factors),
            n_heads, n_kv_heads, head_dim, r.rope_dim, np.float32(r.theta), np.float32(r.attn_factor),
            max_ctx)
