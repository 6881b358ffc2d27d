"""Each numpy op against a float64 formula or torch's own implementation, on odd sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gpu import reference as ref

RTOL = 2e-5  # float32 ops vs float64 / torch float32: a few ulps, summed over <= a few hundred terms


def rand(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def close(actual: np.ndarray, expected, rtol: float = RTOL) -> None:
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    err = np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-30)
    assert err <= rtol, f"relative error {err:.3g} > {rtol}"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def test_embedding_gathers_rows(rng):
    table = rand(rng, 37, 5)
    ids = np.array([3, 0, 36, 3])
    out = ref.embedding(table, ids)
    assert out.shape == (4, 5)
    np.testing.assert_array_equal(out[0], table[3])
    np.testing.assert_array_equal(out[2], table[36])
    np.testing.assert_array_equal(out[3], out[0])


def test_feed_ids_takes_negative_ids_from_the_fed_tokens():
    fed = np.array([7, -1, 12])
    assert ref.feed_ids(np.array([5, -1, -3, -2, 0]), fed).tolist() == [5, 7, 12, 0, 0]


@pytest.mark.parametrize("shape", [(1, 7), (5, 64), (3, 577)])
def test_rmsnorm_matches_float64(rng, shape):
    x, w = rand(rng, *shape), rand(rng, shape[-1])
    x64 = x.astype(np.float64)
    expected = x64 / np.sqrt(np.mean(x64**2, axis=-1, keepdims=True) + 1e-5) * w
    close(ref.rmsnorm(x, w, 1e-5), expected)
    close(ref.rmsnorm(x, w, 1e-5), F.rms_norm(torch.from_numpy(x), (shape[-1],), torch.from_numpy(w), 1e-5))


@pytest.mark.parametrize("shape", [(1, 7), (4, 96), (2, 769)])
def test_layernorm_matches_torch(rng, shape):
    x, w, b = rand(rng, *shape, scale=3.0) + 1.5, rand(rng, shape[-1]), rand(rng, shape[-1])
    expected = F.layer_norm(
        torch.from_numpy(x).double(),
        (shape[-1],),
        torch.from_numpy(w).double(),
        torch.from_numpy(b).double(),
        1e-5,
    )
    close(ref.layernorm(x, w, b, 1e-5), expected)
    close(ref.layernorm(x, w, None, 1e-5), expected.numpy() - b)


@pytest.mark.parametrize("t", [1, 6])
def test_linear_with_and_without_bias(rng, t):
    x, w, b = rand(rng, t, 33), rand(rng, 17, 33), rand(rng, 17)
    expected = x.astype(np.float64) @ w.astype(np.float64).T
    close(ref.linear(x, w), expected)
    close(ref.linear(x, w, b), expected + b)


def test_activations_match_torch(rng):
    x = rand(rng, 3, 101, scale=4.0)
    tx = torch.from_numpy(x).double()
    close(ref.silu(x), F.silu(tx))
    close(ref.gelu(x), F.gelu(tx, approximate="tanh"))
    g, u = rand(rng, 2, 50), rand(rng, 2, 50)
    close(ref.swiglu(g, u), F.silu(torch.from_numpy(g).double()) * torch.from_numpy(u).double())


def test_gelu_is_the_tanh_approximation_not_erf():
    x = np.array([-3.0, -1.0, 0.5, 2.0], dtype=np.float32)
    tanh_form = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x.astype(np.float64) ** 3)))
    close(ref.gelu(x), tanh_form, rtol=1e-6)
    erf = F.gelu(torch.from_numpy(x).double()).numpy()
    assert np.max(np.abs(ref.gelu(x) - erf)) > 1e-5  # the two GELUs are distinguishable here


def test_softmax_rows_sum_to_one_and_match_torch(rng):
    x = rand(rng, 4, 9, scale=20.0)
    close(ref.softmax(x), torch.softmax(torch.from_numpy(x).double(), -1))
    np.testing.assert_allclose(ref.softmax(x).sum(-1), 1.0, rtol=1e-6)


def hf_rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@pytest.mark.parametrize("head_dim,rope_dim", [(16, 16), (64, 64), (24, 16)])
def test_rope_neox_matches_hf_formula(rng, head_dim, rope_dim):
    seq_len, n_heads, theta = 7, 3, 10000.0
    positions = np.array([0, 1, 2, 5, 9, 100, 1999])
    x = rand(rng, seq_len, n_heads, head_dim)
    inv = ref.rope_inv_freq(rope_dim, theta)
    cos, sin = ref.rope_cos_sin(positions, inv)
    ang = torch.from_numpy(positions).double()[:, None] * torch.from_numpy(inv)[None, :]
    emb = torch.cat((ang, ang), -1)[:, None, :]  # [T, 1, rope_dim]
    tx = torch.from_numpy(x).double()
    rot, rest = tx[..., :rope_dim], tx[..., rope_dim:]
    expected = torch.cat((rot * emb.cos() + hf_rotate_half(rot) * emb.sin(), rest), -1)
    close(ref.rope_neox(x, cos, sin), expected)


def test_rope_normal_on_llama_permuted_rows_equals_neox_on_hf_rows(rng):
    """llama.cpp's converter permutes Q/K rows so that the adjacent-pair rotation equals HF's NEOX."""
    seq_len, n_heads, head_dim = 5, 2, 8
    hf_x = rand(rng, seq_len, n_heads, head_dim)
    # the converter's permute: per head, rows (0..hd/2-1 | hd/2..hd-1) interleaved to (0, hd/2, 1, ...)
    order = np.stack([np.arange(head_dim // 2), np.arange(head_dim // 2) + head_dim // 2], 1).reshape(-1)
    gguf_x = hf_x[..., order]
    cos, sin = ref.rope_cos_sin(np.arange(3, 3 + seq_len), ref.rope_inv_freq(head_dim, 500000.0))
    np.testing.assert_allclose(
        ref.rope_normal(gguf_x, cos, sin), ref.rope_neox(hf_x, cos, sin)[..., order], rtol=0, atol=0
    )


def test_rope_factors_divide_frequencies_and_attn_factor_scales():
    factors = np.array([1.0, 2.0, 4.0, 8.0])
    inv = ref.rope_inv_freq(8, 10000.0, factors)
    np.testing.assert_allclose(inv, 10000.0 ** (-np.arange(0, 8, 2) / 8) / factors)
    cos, sin = ref.rope_cos_sin(np.array([0, 3]), inv, attn_factor=1.25)
    np.testing.assert_allclose(cos[0], 1.25, rtol=1e-7)
    np.testing.assert_allclose(sin[1], 1.25 * np.sin(3 * inv), rtol=1e-6)


@pytest.mark.parametrize("n_heads,n_kv_heads,start_pos,seq_len", [(4, 4, 0, 5), (6, 2, 0, 9), (9, 3, 4, 3)])
def test_attention_prefill_matches_torch_sdpa(rng, n_heads, n_kv_heads, start_pos, seq_len):
    head_dim = 16
    n_keys = start_pos + seq_len
    q = rand(rng, seq_len, n_heads, head_dim)
    k, v = rand(rng, n_kv_heads, n_keys, head_dim), rand(rng, n_kv_heads, n_keys, head_dim)
    out = ref.attention_prefill(q, k, v, start_pos)
    group = n_heads // n_kv_heads
    tq = torch.from_numpy(q).double().transpose(0, 1)  # [n_heads, T, hd]
    tk = torch.from_numpy(k).double().repeat_interleave(group, 0)
    tv = torch.from_numpy(v).double().repeat_interleave(group, 0)
    mask = torch.arange(n_keys)[None, :] <= (start_pos + torch.arange(seq_len))[:, None]
    expected = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=mask)  # [n_heads, T, hd]
    close(out, expected.transpose(0, 1).reshape(seq_len, n_heads * head_dim))


def test_attention_decode_equals_last_row_of_prefill(rng):
    n_heads, n_kv_heads, head_dim, n_keys = 14, 2, 8, 11
    q = rand(rng, 1, n_heads, head_dim)
    k, v = rand(rng, n_kv_heads, n_keys, head_dim), rand(rng, n_kv_heads, n_keys, head_dim)
    out = ref.attention_decode(q[0], k, v)
    assert out.shape == (n_heads * head_dim,)
    close(out, ref.attention_prefill(q, k, v, n_keys - 1)[0].astype(np.float64), rtol=1e-6)
