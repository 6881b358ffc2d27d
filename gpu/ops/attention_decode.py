"""attention_decode.cu + attention_combine.cu: flash-decoding of one new query per sequence."""

from __future__ import annotations

import math
import os

import numpy as np

from ..errors import InvalidInput
from ..runtime import Runtime, ptr
from . import blocks, check

SPLIT_LEN = 64  # context positions per block of the first pass (2 warps x 32)
# contexts the one-pass form is built for (one block per head and row, a warp per 32 positions): blocks of 4
# warps where 128 positions do (batch 1: 2 µs a layer less than 16 warps on an H100), else 16
# ($ORCD_DIRECT_TIERS, e.g. "512": an A/B switch)
DIRECT_TIERS = tuple(sorted({*map(int, os.environ.get("ORCD_DIRECT_TIERS", "128,512").split(",")), 512}))
DIRECT_CTX = DIRECT_TIERS[-1]  # the longest context the one-pass form covers


def n_splits(max_ctx: int) -> int:
    return blocks(max_ctx, SPLIT_LEN)


def attention_decode(rt: Runtime, out, q, k_cache, v_cache, slots, pos, part_out, part_ml,
                     splits: int | None = None, direct_ctx: int = 0) -> None:
    """out [n, n_heads * hd] operand: softmax(q k^T / sqrt(hd)) v over positions 0..pos[i] of slots[i].

    q [n, n_heads, hd] operand; caches [n_slots, n_kv, max_ctx, hd]; slots, pos [n] int32 (device, so a
    captured graph reads each step's values); part_out [n, n_heads, S, hd] and part_ml [n, n_heads, S, 2]
    f32 scratch with S = `splits`, by default n_splits(max_ctx); a smaller S is the caller's promise that
    every pos[i] < S * SPLIT_LEN (a packed prefill of short prompts). The result does not depend on S.
    direct_ctx (one of DIRECT_TIERS; 0: two passes): one launch, one block per (head, row) writing `out`
    itself (the partials unused), bit-identical to the two passes; the caller's promise that every
    pos[i] < direct_ctx.
    """
    n, n_heads, head_dim = q.shape
    n_slots, n_kv_heads, max_ctx, _ = k_cache.shape
    if n_heads % n_kv_heads:
        raise InvalidInput(f"n_heads {n_heads} is not a multiple of n_kv_heads {n_kv_heads}")
    if head_dim % 32:
        raise InvalidInput(f"head_dim {head_dim} is not a multiple of 32 (decode attention: 8 lanes per row)")
    splits = n_splits(max_ctx) if splits is None else splits
    if not 1 <= splits <= n_splits(max_ctx):
        raise InvalidInput(f"splits {splits} outside [1, {n_splits(max_ctx)}] for max_ctx {max_ctx}")
    check(q, "q", rt.operand, (n, n_heads, head_dim))
    check(out, "out", rt.operand, (n, n_heads * head_dim))
    check(k_cache, "k_cache", rt.operand, (n_slots, n_kv_heads, max_ctx, head_dim))
    check(v_cache, "v_cache", rt.operand, (n_slots, n_kv_heads, max_ctx, head_dim))
    check(slots, "slots", np.int32, (n,))
    check(pos, "pos", np.int32, (n,))
    check(part_out, "part_out", np.float32, (n, n_heads, splits, head_dim))
    check(part_ml, "part_ml", np.float32, (n, n_heads, splits, 2))
    scale = np.float32(1.0 / math.sqrt(head_dim))
    if direct_ctx:
        if direct_ctx not in DIRECT_TIERS:
            raise InvalidInput(f"direct_ctx {direct_ctx}: the one-pass form covers one of {DIRECT_TIERS}")
        warps = direct_ctx // 32
        one = rt.kernel("attention_decode", "PPPPPPPiiiif", HEAD_DIM=head_dim, DIRECT=1, WARPS=warps)
        rt.launch(one, (n_heads, n, 1), (32 * warps, 1, 1), ptr(out), ptr(part_ml), ptr(q),
                  ptr(k_cache), ptr(v_cache), ptr(slots), ptr(pos), n_heads, n_kv_heads, max_ctx, direct_ctx,
                  scale)
        return
    first = rt.kernel("attention_decode", "PPPPPPPiiiif", HEAD_DIM=head_dim)
    rt.launch(first, (n_heads, n, splits), (64, 1, 1), ptr(part_out), ptr(part_ml), ptr(q), ptr(k_cache),
              ptr(v_cache), ptr(slots), ptr(pos), n_heads, n_kv_heads, max_ctx, SPLIT_LEN, scale)
    combine = rt.kernel("attention_combine", "PPPPiii")
    rt.launch(combine, (n_heads, n, 1), (min(1024, blocks(head_dim, 32) * 32), 1, 1), ptr(out),
              ptr(part_out), ptr(part_ml), ptr(pos), splits, SPLIT_LEN, head_dim)
