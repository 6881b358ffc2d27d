"""numpy float32 twins of every op of the forward pass.

These define the semantics: the numpy engine composes them, and each CUDA kernel is tested against
its twin here. Every op is a pure function of numpy arrays (float32 in, float32 out) with no hidden
state, so a kernel test can call one op alone with fresh random inputs.

Layouts: activations are row-major `[T, ...]` (one row per token); weights are `[out, in]` as in the
GGUF file (ggml's ne1 = rows); the KV cache of one sequence is head-major `[n_kv_heads, S, head_dim]`.
"""

from __future__ import annotations

import math

import numpy as np

_GELU_C = math.sqrt(2.0 / math.pi)


def embedding(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Gather rows of `table` [vocab, dim] for `ids` [T] -> [T, dim]."""
    return table[np.asarray(ids, dtype=np.int64)]  # [T, dim]


def dequant_q8(quants: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Q8_0 quants int8 [N, K] with scales f16 [N, K / 32] -> float32 [N, K] = d * q per 32-wide block: the
    loader's arithmetic (gguf_loader.quants), exact in float32, so one rounding to the operand type gives
    what dequant_q8.cu, gemv.cu (WQ8) and embedding.cu (TABLE_Q8) use."""
    d = np.repeat(scales.astype(np.float32), 32, axis=1)  # [N, K]
    return quants.astype(np.float32) * d


def feed_ids(ids: np.ndarray, fed: np.ndarray) -> np.ndarray:
    """The ids embedding.cu looks up: ids [T], where -(j + 1) stands for fed[j] (a token picked on the
    device by an earlier step; a negative one, a failed pick, reads row 0)."""
    ids = np.asarray(ids, dtype=np.int64)  # [T]
    from_fed = np.maximum(np.asarray(fed, dtype=np.int64)[np.maximum(-ids - 1, 0)], 0)  # [T]
    return np.where(ids < 0, from_fed, ids)


def add(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Residual add."""
    return x + y


def rmsnorm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * weight over the last axis."""
    ms = np.mean(x * x, axis=-1, keepdims=True)  # [T, 1]
    return (x / np.sqrt(ms + np.float32(eps))) * weight


def layernorm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, eps: float) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis (biased variance)."""
    mean = np.mean(x, axis=-1, keepdims=True)  # [T, 1]
    centred = x - mean
    var = np.mean(centred * centred, axis=-1, keepdims=True)  # [T, 1]
    out = centred / np.sqrt(var + np.float32(eps)) * weight
    return out if bias is None else out + bias


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """x [T, in] @ weight[out, in].T (+ bias [out]) -> [T, out]; T = 1 goes through BLAS gemv."""
    out = x @ weight.T  # [T, out]
    return out if bias is None else out + bias


def silu(x: np.ndarray) -> np.ndarray:
    return x / (np.float32(1.0) + np.exp(-x))


def swiglu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """silu(gate) * up (llama, qwen2, phi3 feed-forward)."""
    return silu(gate) * up


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation: what ggml_gelu and HF's gpt2 ("gelu_new") compute."""
    inner = np.float32(_GELU_C) * (x + np.float32(0.044715) * x * x * x)
    return np.float32(0.5) * x * (np.float32(1.0) + np.tanh(inner))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax; rows that are all -inf are not expected (causal rows see >= 1 key)."""
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def rope_inv_freq(rope_dim: int, theta: float, freq_factors: np.ndarray | None = None) -> np.ndarray:
    """Inverse frequencies [rope_dim/2] (float64): theta^(-2i/rope_dim), divided by Phi-3's factors."""
    inv = theta ** (-np.arange(0, rope_dim, 2, dtype=np.float64) / rope_dim)  # [rope_dim/2]
    if freq_factors is not None:
        inv = inv / np.asarray(freq_factors, dtype=np.float64)
    return inv


def rope_cos_sin(
    positions: np.ndarray, inv_freq: np.ndarray, attn_factor: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin tables [T, rope_dim/2] float32 for `positions` [T], scaled by `attn_factor`."""
    angles = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]  # [T, rope_dim/2]
    cos = (np.cos(angles) * attn_factor).astype(np.float32)
    sin = (np.sin(angles) * attn_factor).astype(np.float32)
    return cos, sin


def rope_normal(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate adjacent pairs (x[2i], x[2i+1]) of the first rope_dim dims (llama-arch GGUFs).

    x [T, n_heads, head_dim]; cos, sin [T, rope_dim/2]. Dims past rope_dim pass through.
    """
    rope_dim = 2 * cos.shape[-1]
    c, s = cos[:, None, :], sin[:, None, :]  # [T, 1, rope_dim/2]
    x0, x1 = x[..., 0:rope_dim:2], x[..., 1:rope_dim:2]  # [T, n_heads, rope_dim/2]
    out = x.copy()
    out[..., 0:rope_dim:2] = x0 * c - x1 * s
    out[..., 1:rope_dim:2] = x0 * s + x1 * c
    return out


def rope_neox(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate half-split pairs (x[i], x[i + rope_dim/2]) of the first rope_dim dims (qwen2, phi3).

    x [T, n_heads, head_dim]; cos, sin [T, rope_dim/2]. Dims past rope_dim pass through.
    """
    half = cos.shape[-1]
    c, s = cos[:, None, :], sin[:, None, :]  # [T, 1, rope_dim/2]
    x0, x1 = x[..., :half], x[..., half : 2 * half]  # [T, n_heads, rope_dim/2]
    out = x.copy()
    out[..., :half] = x0 * c - x1 * s
    out[..., half : 2 * half] = x0 * s + x1 * c
    return out


def attention_prefill(q: np.ndarray, k: np.ndarray, v: np.ndarray, start_pos: int) -> np.ndarray:
    """Causal grouped-query attention of T new queries over one sequence's keys.

    q [T, n_heads, head_dim] at positions start_pos .. start_pos+T-1; k, v [n_kv_heads, S, head_dim]
    with S = start_pos + T (the cache including the new tokens). Query head h reads KV head
    h // (n_heads / n_kv_heads). Returns [T, n_heads * head_dim].
    """
    seq_len, n_heads, head_dim = q.shape
    n_kv_heads, n_keys, _ = k.shape
    group = n_heads // n_kv_heads
    qg = q.transpose(1, 0, 2).reshape(n_kv_heads, group * seq_len, head_dim)  # [n_kv, group*T, hd]
    scores = qg @ k.transpose(0, 2, 1)  # [n_kv, group*T, S]
    scores = scores.reshape(n_kv_heads, group, seq_len, n_keys) * np.float32(1.0 / math.sqrt(head_dim))
    query_pos = start_pos + np.arange(seq_len)[:, None]  # [T, 1]
    masked = np.arange(n_keys)[None, :] > query_pos  # [T, S]
    scores = np.where(masked, np.float32(-np.inf), scores)  # [n_kv, group, T, S]
    probs = softmax(scores).reshape(n_kv_heads, group * seq_len, n_keys)
    out = probs @ v  # [n_kv, group*T, hd]
    out = out.reshape(n_heads, seq_len, head_dim).transpose(1, 0, 2)  # [T, n_heads, hd]
    return np.ascontiguousarray(out).reshape(seq_len, n_heads * head_dim)


def attention_decode(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """One new query per head over a sequence's whole KV cache (no mask: every key is in the past).

    q [n_heads, head_dim]; k, v [n_kv_heads, S, head_dim] -> [n_heads * head_dim].
    """
    n_heads, head_dim = q.shape
    n_kv_heads = k.shape[0]
    qg = q.reshape(n_kv_heads, n_heads // n_kv_heads, head_dim)  # [n_kv, group, hd]
    scores = (qg @ k.transpose(0, 2, 1)) * np.float32(1.0 / math.sqrt(head_dim))  # [n_kv, group, S]
    out = softmax(scores) @ v  # [n_kv, group, hd]
    return out.reshape(n_heads * head_dim)
