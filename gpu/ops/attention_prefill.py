"""attention_prefill.cu: causal attention of one sequence's new tokens over its KV cache."""

from __future__ import annotations

import math

from ..errors import InvalidInput
from ..runtime import Runtime, ptr
from . import blocks, check

_QUERIES_PER_BLOCK = 32


def attention_prefill(rt: Runtime, out, q, k_cache, v_cache, slot: int, start: int) -> None:
    """out [T, n_heads * hd] operand for queries q [T, n_heads, hd] at positions start..start+T-1 of
    `slot`, whose keys and values 0..start+T-1 are already in the caches [n_slots, n_kv, max_ctx, hd]."""
    t, n_heads, head_dim = q.shape
    n_slots, n_kv_heads, max_ctx, _ = k_cache.shape
    if head_dim % 8:
        raise InvalidInput(f"head_dim {head_dim} is not a multiple of 8")
    if n_heads % n_kv_heads:
        raise InvalidInput(f"n_heads {n_heads} is not a multiple of n_kv_heads {n_kv_heads}")
    if not 0 <= slot < n_slots or start < 0 or start + t > max_ctx:
        raise InvalidInput(f"slot {slot}, positions {start}..{start + t - 1} outside the cache "
                           f"({n_slots} slots x {max_ctx})")
    check(q, "q", rt.operand, (t, n_heads, head_dim))
    check(out, "out", rt.operand, (t, n_heads * head_dim))
    check(k_cache, "k_cache", rt.operand, (n_slots, n_kv_heads, max_ctx, head_dim))
    check(v_cache, "v_cache", rt.operand, (n_slots, n_kv_heads, max_ctx, head_dim))
    fn = rt.kernel("attention_prefill", "PPPPiiiiiif", HEAD_DIM=head_dim)
    rt.launch(fn, (blocks(t, _QUERIES_PER_BLOCK), n_heads, 1), (4 * _QUERIES_PER_BLOCK, 1, 1), ptr(out),
              ptr(q), ptr(k_cache), ptr(v_cache), slot, start, t, n_heads, n_kv_heads, max_ctx,
              float(1.0 / math.sqrt(head_dim)))
