"""rope_kv.cu: split fused QKV rows, rotate q and k, append k and v to the KV cache."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInput
from ..runtime import Runtime, ptr
from . import check

ROPE_MODES = {"none": 0, "normal": 0, "neox": 1}


def rope_kv(rt: Runtime, q_out, k_cache, v_cache, qkv, slots, pos, *, rope: str, rope_dim: int,
            theta: float, freq_factors=None, attn_factor: float = 1.0) -> None:
    """q_out [n, n_heads, hd] operand; caches [n_slots, n_kv, max_ctx, hd] operand; qkv [n, (nh+2nkv) hd]
    f32; slots, pos [n] int32. rope "none" copies q and k unrotated."""
    n, n_heads, head_dim = q_out.shape
    n_slots, n_kv_heads, max_ctx, _ = k_cache.shape
    if rope not in ROPE_MODES:
        raise InvalidInput(f"rope: {rope!r} not in {sorted(ROPE_MODES)}")
    if rope == "none":
        rope_dim = 0
    if rope_dim % 2 or rope_dim > head_dim or head_dim % 2:
        raise InvalidInput(f"rope_dim {rope_dim} must be even and <= head_dim {head_dim}")
    check(q_out, "q_out", rt.operand, (n, n_heads, head_dim))
    check(k_cache, "k_cache", rt.operand, (n_slots, n_kv_heads, max_ctx, head_dim))
    check(v_cache, "v_cache", rt.operand, (n_slots, n_kv_heads, max_ctx, head_dim))
    check(qkv, "qkv", np.float32, (n, (n_heads + 2 * n_kv_heads) * head_dim))
    check(slots, "slots", np.int32, (n,))
    check(pos, "pos", np.int32, (n,))
    if freq_factors is not None:
        check(freq_factors, "freq_factors", np.float32, (rope_dim // 2,))
    fn = rt.kernel("rope_kv", "PPPPPPPiiiiiffi")
    rt.launch(fn, (n, 1, 1), (1024, 1, 1), ptr(q_out), ptr(k_cache), ptr(v_cache), ptr(qkv), ptr(slots),
              ptr(pos), ptr(freq_factors), n_heads, n_kv_heads, head_dim, rope_dim, ROPE_MODES[rope],
              np.float32(theta), np.float32(attn_factor), max_ctx)
