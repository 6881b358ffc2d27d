"""attention_prefill.cu: causal attention of one sequence's new tokens over its KV cache (tensor cores)."""

from __future__ import annotations

import math
import weakref

import numpy as np

from ..errors import InvalidInput
from ..runtime import Runtime, ptr
from . import blocks, check

_QUERIES_PER_BLOCK = 64  # 4 warps of 16 query rows (attention_prefill.cu BQ), twice: 2 groups split the keys
_THREADS = 256  # attention_prefill.cu N_THREADS
_KEYS_PER_TILE = 64  # attention_prefill.cu KT
_smem_set: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # runtime -> head dims, limit raised


def smem_bytes(head_dim: int) -> int:
    """Dynamic shared memory of one block (attention_prefill.cu SMEM_BYTES): per group of warps 2 stages of a
    K and a V tile, rows padded by 8 halves."""
    return 8 * _KEYS_PER_TILE * (head_dim + 8) * 2


def attention_prefill(rt: Runtime, out, q, k_cache, v_cache, slots, pos) -> None:
    """out [T, n_heads * hd] operand for queries q [T, n_heads, hd] at positions pos[0]..pos[0]+T-1 of slot
    slots[0], whose keys and values 0..pos[0]+T-1 are already in the caches [n_slots, n_kv, max_ctx, hd].
    slots, pos [T] int32 on the device (the kernel reads their first entries, so a captured graph serves
    every chunk of its size); the caller keeps pos[0] + T <= max_ctx and slots[0] < n_slots."""
    t, n_heads, head_dim = q.shape
    n_slots, n_kv_heads, max_ctx, _ = k_cache.shape
    if head_dim % 16:
        raise InvalidInput(f"head_dim {head_dim} is not a multiple of 16")
    if n_heads % n_kv_heads:
        raise InvalidInput(f"n_heads {n_heads} is not a multiple of n_kv_heads {n_kv_heads}")
    if t > max_ctx:
        raise InvalidInput(f"{t} queries exceed the cache's {max_ctx} positions")
    check(q, "q", rt.operand, (t, n_heads, head_dim))
    check(out, "out", rt.operand, (t, n_heads * head_dim))
    check(k_cache, "k_cache", rt.operand, (n_slots, n_kv_heads, max_ctx, head_dim))
    check(v_cache, "v_cache", rt.operand, (n_slots, n_kv_heads, max_ctx, head_dim))
    check(slots, "slots", np.int32, (t,))
    check(pos, "pos", np.int32, (t,))
    fn = rt.kernel("attention_prefill", "PPPPPPiiiif", HEAD_DIM=head_dim)
    if t == 0:
        return
    smem = smem_bytes(head_dim)
    done = _smem_set.setdefault(rt, set())
    if head_dim not in done:  # over 48 KB: the block's limit must be raised
        import pycuda.driver as cuda

        fn.set_attribute(cuda.function_attribute.MAX_DYNAMIC_SHARED_SIZE_BYTES, smem)
        done.add(head_dim)
    # grid (head, query block): the kernel takes the query blocks from the last (most keys) down
    rt.launch(fn, (n_heads, blocks(t, _QUERIES_PER_BLOCK), 1), (_THREADS, 1, 1), ptr(out),
              ptr(q), ptr(k_cache), ptr(v_cache), ptr(slots), ptr(pos), t, n_heads, n_kv_heads, max_ctx,
              float(1.0 / math.sqrt(head_dim)), shared=smem)
