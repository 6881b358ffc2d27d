"""Each CUDA kernel against its numpy twin in gpu.reference, on fresh random inputs (odd sizes too).

Inputs are rounded to the operand type first and the twin runs in float32 on those same values, so
what is compared is the kernel's arithmetic (f32 accumulation, output rounding): relative error
||out - ref|| / ||ref|| <= 1e-2 for f16/bf16 outputs, 1e-4 for f32 outputs of f32 inputs. Outputs are
poisoned with NaN before each launch, so an element the kernel forgot to write fails the test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpu import reference as ref
from tests.gpu.device_arrays import empty, f32, get, ints, operand, rel_err

pytestmark = pytest.mark.cuda


def test_embedding(rt, rng):
    from gpu.ops.embedding import embedding

    vocab, dim, n = 1003, 77, 9
    table, table_f = operand(rt, rng.standard_normal((vocab, dim)).astype(np.float32))
    pos_table, pos_f = operand(rt, rng.standard_normal((64, dim)).astype(np.float32))
    ids = rng.integers(0, vocab, n)
    pos = rng.integers(0, 64, n)
    out = empty(rt, (n, dim), np.float32)
    embedding(rt, out, ints(rt, ids), table, ints(rt, pos), pos_table)
    want = ref.add(ref.embedding(table_f, ids), pos_f[pos])
    assert rel_err(get(rt, out), want) <= 1e-6
    embedding(rt, out, ints(rt, ids), table, ints(rt, pos), None)
    assert rel_err(get(rt, out), ref.embedding(table_f, ids)) <= 1e-6
    fed = rng.integers(0, vocab, 12)
    fed[3] = -1  # a failed pick: row 0
    mixed = np.where(np.arange(n) % 2 == 0, -(rng.integers(0, 12, n) + 1), ids)
    mixed[1] = -4  # fed[3]
    embedding(rt, out, ints(rt, mixed), table, ints(rt, pos), None, fed=ints(rt, fed))
    assert np.array_equal(get(rt, out), ref.embedding(table_f, ref.feed_ids(mixed, fed)))  # a gather: exact


@pytest.mark.parametrize(("n", "dim"), [(1, 64), (5, 333), (3, 3072)])
def test_rmsnorm(rt, rng, n, dim):
    from gpu.ops.rmsnorm import rmsnorm

    x = (rng.standard_normal((n, dim)) * 3).astype(np.float32)
    w = (1 + 0.1 * rng.standard_normal(dim)).astype(np.float32)
    out = empty(rt, (n, dim))
    rmsnorm(rt, out, f32(rt, x), f32(rt, w), 1e-5)
    assert rel_err(get(rt, out), ref.rmsnorm(x, w, 1e-5)) <= 1e-2


@pytest.mark.parametrize(("n", "dim"), [(1, 64), (5, 333)])
def test_layernorm(rt, rng, n, dim):
    from gpu.ops.layernorm import layernorm

    x = (rng.standard_normal((n, dim)) * 3 + 1).astype(np.float32)
    w = (1 + 0.1 * rng.standard_normal(dim)).astype(np.float32)
    b = (0.1 * rng.standard_normal(dim)).astype(np.float32)
    out = empty(rt, (n, dim))
    layernorm(rt, out, f32(rt, x), f32(rt, w), f32(rt, b), 1e-5)
    assert rel_err(get(rt, out), ref.layernorm(x, w, b, 1e-5)) <= 1e-2


@pytest.mark.parametrize(
    ("m", "n", "k"),
    [(1, 1001, 776), (3, 517, 4864), (8, 96, 8), (9, 517, 1000), (33, 1000, 896), (64, 130, 4096),
     (65, 517, 1000), (100, 77, 64), (300, 517, 264), (1024, 2304, 256)],
)
@pytest.mark.parametrize("mode", ["plain", "bias+accumulate"])
def test_linear(rt, rng, m, n, k, mode):
    from gpu.ops.linear import linear

    x, x_f = operand(rt, rng.standard_normal((m, k)).astype(np.float32))
    w, w_f = operand(rt, (rng.standard_normal((n, k)) / math.sqrt(k)).astype(np.float32))
    if mode == "plain":
        y = empty(rt, (m, n), np.float32)
        linear(rt, y, x, w)
        want = ref.linear(x_f, w_f)
    else:
        bias = rng.standard_normal(n).astype(np.float32)
        resid = rng.standard_normal((m, n)).astype(np.float32)
        y = f32(rt, resid)
        linear(rt, y, x, w, f32(rt, bias), accumulate=True)
        want = ref.add(resid, ref.linear(x_f, w_f, bias))
    assert rel_err(get(rt, y), want) <= 1e-4


@pytest.mark.parametrize(
    ("rope", "head_dim", "rope_dim", "factors"),
    [("normal", 64, 64, False), ("neox", 64, 64, False), ("neox", 96, 96, True), ("neox", 64, 32, False),
     ("normal", 64, 32, False), ("none", 64, 0, False)],
)
def test_rope_kv(rt, rng, rope, head_dim, rope_dim, factors):
    from gpu.ops.rope_kv import rope_kv

    n, n_heads, n_kv, n_slots, max_ctx = 5, 6, 2, 3, 300
    qkv = rng.standard_normal((n, (n_heads + 2 * n_kv) * head_dim)).astype(np.float32)
    slots = rng.permutation(np.repeat(np.arange(n_slots), 2))[:n]
    pos = rng.choice(max_ctx, n, replace=False)
    ff = (1 + 3 * rng.random(rope_dim // 2)).astype(np.float32) if factors else None
    attn_factor = 1.19 if factors else 1.0
    q_out = empty(rt, (n, n_heads, head_dim))
    kc, vc = empty(rt, (n_slots, n_kv, max_ctx, head_dim)), empty(rt, (n_slots, n_kv, max_ctx, head_dim))
    rope_kv(rt, q_out, kc, vc, f32(rt, qkv), ints(rt, slots), ints(rt, pos), rope=rope, rope_dim=rope_dim,
            theta=10000.0, freq_factors=None if ff is None else f32(rt, ff), attn_factor=attn_factor)
    q = qkv[:, : n_heads * head_dim].reshape(n, n_heads, head_dim)
    k = qkv[:, n_heads * head_dim : (n_heads + n_kv) * head_dim].reshape(n, n_kv, head_dim)
    v = qkv[:, (n_heads + n_kv) * head_dim :].reshape(n, n_kv, head_dim)
    if rope != "none":
        cos, sin = ref.rope_cos_sin(pos, ref.rope_inv_freq(rope_dim, 10000.0, ff), attn_factor)
        fn = ref.rope_neox if rope == "neox" else ref.rope_normal
        q, k = fn(q, cos, sin), fn(k, cos, sin)
    assert rel_err(get(rt, q_out), q) <= 1e-2
    kh, vh = get(rt, kc), get(rt, vc)
    assert rel_err(kh[slots, :, pos], k) <= 1e-2
    assert rel_err(vh[slots, :, pos], v) <= 1e-2


def _filled_cache(rt, rng, n_slots, n_kv, max_ctx, head_dim):
    k, k_f = operand(rt, rng.standard_normal((n_slots, n_kv, max_ctx, head_dim)).astype(np.float32))
    v, v_f = operand(rt, rng.standard_normal((n_slots, n_kv, max_ctx, head_dim)).astype(np.float32))
    return k, k_f, v, v_f


@pytest.mark.parametrize(("head_dim", "n_heads", "n_kv"), [(64, 14, 2), (96, 8, 8), (128, 4, 1)])
def test_attention_decode(rt, rng, head_dim, n_heads, n_kv):
    from gpu.ops.attention_decode import attention_decode, n_splits

    n, n_slots, max_ctx = 4, 5, 700
    kc, k_f, vc, v_f = _filled_cache(rt, rng, n_slots, n_kv, max_ctx, head_dim)
    q, q_f = operand(rt, rng.standard_normal((n, n_heads, head_dim)).astype(np.float32))
    slots = rng.choice(n_slots, n, replace=False)
    pos = np.array([0, 255, 256, max_ctx - 1])[rng.permutation(n)]
    s = n_splits(max_ctx)
    out = empty(rt, (n, n_heads * head_dim))
    part_out = empty(rt, (n, n_heads, s, head_dim), np.float32)
    part_ml = empty(rt, (n, n_heads, s, 2), np.float32)
    attention_decode(rt, out, q, kc, vc, ints(rt, slots), ints(rt, pos), part_out, part_ml)
    got = get(rt, out)
    for i in range(n):
        want = ref.attention_decode(q_f[i], k_f[slots[i], :, : pos[i] + 1], v_f[slots[i], :, : pos[i] + 1])
        assert rel_err(got[i], want) <= 1e-2, f"row {i} (pos {pos[i]})"


# every length class of each one-pass form: one position, a split's first warp only, a whole split, the
# first of a split, odd tails, the last covered position
@pytest.mark.parametrize("direct_ctx", [128, 512])
@pytest.mark.parametrize(("head_dim", "n_heads", "n_kv"), [(64, 14, 2), (96, 4, 4), (128, 4, 1)])
def test_attention_decode_one_pass_is_bit_identical_to_two(rt, rng, head_dim, n_heads, n_kv, direct_ctx):
    from gpu.ops.attention_decode import attention_decode, n_splits

    n_slots, max_ctx = 9, 700
    pos = np.array([0, 17, 31, 32, 63, 64, 100, 200, direct_ctx - 1])
    pos = pos[pos < direct_ctx]
    n = len(pos)
    kc, k_f, vc, v_f = _filled_cache(rt, rng, n_slots, n_kv, max_ctx, head_dim)
    q, _ = operand(rt, rng.standard_normal((n, n_heads, head_dim)).astype(np.float32))
    slots, positions = ints(rt, rng.choice(n_slots, n, replace=False)), ints(rt, pos)
    s = n_splits(max_ctx)
    part_out = empty(rt, (n, n_heads, s, head_dim), np.float32)
    part_ml = empty(rt, (n, n_heads, s, 2), np.float32)
    two, one = empty(rt, (n, n_heads * head_dim)), empty(rt, (n, n_heads * head_dim))
    attention_decode(rt, two, q, kc, vc, slots, positions, part_out, part_ml)
    attention_decode(rt, one, q, kc, vc, slots, positions, part_out, part_ml, direct_ctx=direct_ctx)
    want, got = get(rt, two), get(rt, one)
    assert not np.isnan(got).any()
    assert np.array_equal(got, want)  # bit for bit (the operand type widens to float32 exactly)


# odd lengths (partial 64-query blocks and 64-key tiles), a cached prefix (a later chunk of a long prompt:
# start > 0, tiles wholly before the chunk unmasked), GQA ratios 3, 1, 4 and 7 (Qwen2.5's 14 / 2)
@pytest.mark.parametrize(("t", "start"), [(1, 0), (7, 0), (65, 0), (77, 0), (45, 50), (300, 7), (130, 200),
                                          (1, 333)])
@pytest.mark.parametrize(("head_dim", "n_heads", "n_kv"), [(64, 6, 2), (96, 4, 4), (128, 4, 1), (64, 14, 2)])
def test_attention_prefill(rt, rng, t, start, head_dim, n_heads, n_kv):
    from gpu.ops.attention_prefill import attention_prefill

    n_slots, max_ctx, slot = 3, 400, 1
    kc, k_f, vc, v_f = _filled_cache(rt, rng, n_slots, n_kv, max_ctx, head_dim)
    q, q_f = operand(rt, rng.standard_normal((t, n_heads, head_dim)).astype(np.float32))
    out = empty(rt, (t, n_heads * head_dim))
    attention_prefill(rt, out, q, kc, vc, ints(rt, [slot] * t), ints(rt, start + np.arange(t)))
    end = start + t
    want = ref.attention_prefill(q_f, k_f[slot, :, :end], v_f[slot, :, :end], start)
    assert rel_err(get(rt, out), want) <= 1e-2


@pytest.mark.parametrize(("n", "hidden"), [(1, 64), (3, 301), (17, 4864)])
def test_swiglu(rt, rng, n, hidden):
    from gpu.ops.swiglu import swiglu

    gu = (rng.standard_normal((n, 2 * hidden)) * 2).astype(np.float32)
    out = empty(rt, (n, hidden))
    swiglu(rt, out, f32(rt, gu))
    assert rel_err(get(rt, out), ref.swiglu(gu[:, 0::2], gu[:, 1::2])) <= 1e-2  # gate, up interleaved


@pytest.mark.parametrize("shape", [(1, 64), (5, 333)])
def test_gelu(rt, rng, shape):
    from gpu.ops.gelu import gelu

    x = (rng.standard_normal(shape) * 2).astype(np.float32)
    out = empty(rt, shape)
    gelu(rt, out, f32(rt, x))
    assert rel_err(get(rt, out), ref.gelu(x)) <= 1e-2


@pytest.mark.parametrize(("m", "hidden", "k"), [(1, 4864, 896), (5, 68, 136), (64, 704, 256)])
def test_gemv_with_swiglu_epilogue(rt, rng, m, hidden, k):
    from gpu.ops.gemv import gemv

    x, x_f = operand(rt, rng.standard_normal((m, k)).astype(np.float32))
    w, w_f = operand(rt, (2 * rng.standard_normal((2 * hidden, k)) / math.sqrt(k)).astype(np.float32))
    bias = rng.standard_normal(2 * hidden).astype(np.float32)
    out = empty(rt, (m, hidden))
    gemv(rt, out, x, w, f32(rt, bias), swiglu=True)  # w rows: gate 0, up 0, gate 1, up 1, ...
    s = ref.linear(x_f, w_f, bias)  # [m, 2 hidden]
    assert rel_err(get(rt, out), ref.swiglu(s[:, 0::2], s[:, 1::2])) <= 1e-2


@pytest.mark.parametrize(("m", "head_dim", "rope_dim", "factors"),
                         [(1, 64, 64, False), (5, 96, 96, True), (37, 64, 32, False), (3, 64, 0, False)])
def test_gemv_with_rope_kv_epilogue(rt, rng, m, head_dim, rope_dim, factors):
    from gpu.ops.gemv import RopeKV, gemv

    n_heads, n_kv, n_slots, max_ctx, dim = 6, 2, 3, 300, 256
    n = (n_heads + 2 * n_kv) * head_dim
    x, x_f = operand(rt, rng.standard_normal((m, dim)).astype(np.float32))
    w, w_f = operand(rt, (rng.standard_normal((n, dim)) / math.sqrt(dim)).astype(np.float32))
    bias = rng.standard_normal(n).astype(np.float32)
    slots = rng.integers(0, n_slots, m)
    pos = rng.choice(max_ctx, m, replace=False)
    ff = (1 + 3 * rng.random(rope_dim // 2)).astype(np.float32) if factors else None
    q_out = empty(rt, (m, n_heads, head_dim))
    kc, vc = empty(rt, (n_slots, n_kv, max_ctx, head_dim)), empty(rt, (n_slots, n_kv, max_ctx, head_dim))
    gemv(rt, None, x, w, f32(rt, bias), rope=RopeKV(q_out, kc, vc, ints(rt, slots), ints(rt, pos), rope_dim,
                                                       10000.0, None if ff is None else f32(rt, ff), 1.19))
    qkv = ref.linear(x_f, w_f, bias)  # [m, n]; rotated pairs are adjacent columns
    q = qkv[:, : n_heads * head_dim].reshape(m, n_heads, head_dim)
    k = qkv[:, n_heads * head_dim : (n_heads + n_kv) * head_dim].reshape(m, n_kv, head_dim)
    v = qkv[:, (n_heads + n_kv) * head_dim :].reshape(m, n_kv, head_dim)
    if rope_dim:
        cos, sin = ref.rope_cos_sin(pos, ref.rope_inv_freq(rope_dim, 10000.0, ff), 1.19)
        q, k = ref.rope_normal(q, cos, sin), ref.rope_normal(k, cos, sin)
    assert rel_err(get(rt, q_out), q) <= 1e-2
    kh, vh = get(rt, kc), get(rt, vc)
    assert rel_err(kh[slots, :, pos], k) <= 1e-2
    assert rel_err(vh[slots, :, pos], v) <= 1e-2


def test_gemv_row_result_does_not_depend_on_batch(rt, rng):
    from gpu.ops.linear import linear

    k, n = 896, 1152
    x_host = rng.standard_normal((64, k)).astype(np.float32)
    w, _ = operand(rt, (rng.standard_normal((n, k)) / math.sqrt(k)).astype(np.float32))
    rows = {}
    for m in (1, 3, 16, 37, 64):
        x, _ = operand(rt, x_host[:m])
        y = empty(rt, (m, n), np.float32)
        linear(rt, y, x, w)
        rows[m] = get(rt, y)[0]
    for m, row in rows.items():
        assert np.array_equal(row, rows[1]), f"row 0 differs between a batch of 1 and of {m}"


# the software-pipelined weight loads (gemv.PIPELINE_MAX_M) reorder loads only: the same bits, so a batch
# size it serves and one it does not still agree (batch invariance)
@pytest.mark.parametrize(("m", "n", "k"), [(1, 1152, 896), (5, 333, 136), (8, 4864, 896), (3, 3072, 8192)])
def test_gemv_pipelined_is_bit_identical(rt, rng, monkeypatch, m, n, k):
    from gpu.ops import gemv as gemv_mod

    x, _ = operand(rt, rng.standard_normal((m, k)).astype(np.float32))
    w, _ = operand(rt, (rng.standard_normal((n, k)) / math.sqrt(k)).astype(np.float32))
    bias = f32(rt, rng.standard_normal(n).astype(np.float32))
    out = {}
    for pipeline_max_m in (0, 8):
        monkeypatch.setattr(gemv_mod, "PIPELINE_MAX_M", pipeline_max_m)
        y = f32(rt, np.ones((m, n), np.float32))
        gemv_mod.gemv(rt, y, x, w, bias, accumulate=True)
        out[pipeline_max_m] = get(rt, y)
    assert np.array_equal(out[8], out[0])


# gemv(preload=True) issues its first weight loads before the programmatic wait: the same loads, earlier
@pytest.mark.parametrize(("m", "n", "k"), [(1, 1152, 896), (5, 333, 136), (8, 896, 4864), (40, 3072, 8192)])
def test_gemv_preload_is_bit_identical(rt, rng, m, n, k):
    from gpu.ops.gemv import gemv

    x, _ = operand(rt, rng.standard_normal((m, k)).astype(np.float32))
    w, _ = operand(rt, (rng.standard_normal((n, k)) / math.sqrt(k)).astype(np.float32))
    bias = f32(rt, rng.standard_normal(n).astype(np.float32))
    out = {}
    for preload in (False, True):
        y = f32(rt, np.ones((m, n), np.float32))
        gemv(rt, y, x, w, bias, accumulate=True, preload=preload)
        out[preload] = get(rt, y)
    assert np.array_equal(out[True], out[False])


@pytest.mark.parametrize("vocab", [151_936, 77, 32_064])
def test_argmax(rt, rng, vocab):
    from gpu.ops.argmax import argmax, ids_from_packed

    n = 6
    logits = rng.standard_normal((n, vocab)).astype(np.float32)
    logits[1, [7, vocab - 3]] = 50.0  # a tie: the first index wins, as in numpy
    logits[2, -1] = 60.0
    logits[3] -= 100.0  # all negative
    logits[4, 5] = logits[4, 6] = -np.float32(0.0)
    logits[4] = np.minimum(logits[4], -1.0)
    logits[4, 5] = 0.0
    best = rt.empty((n,), np.uint64, "test")
    argmax(rt, best, f32(rt, logits))
    assert ids_from_packed(get(rt, best)).tolist() == logits.argmax(axis=1).tolist()


def test_attention_decode_rejects_head_dim_not_multiple_of_32(rt):
    from gpu.errors import InvalidInput
    from gpu.ops.attention_decode import attention_decode

    q = rt.empty((1, 2, 48), rt.operand, "test")
    cache = rt.empty((2, 1, 64, 48), rt.operand, "test")
    i32 = rt.empty((1,), np.int32, "test")
    out = rt.empty((1, 96), rt.operand, "test")
    part_out = rt.empty((1, 2, 1, 48), np.float32, "test")
    part_ml = rt.empty((1, 2, 1, 2), np.float32, "test")
    with pytest.raises(InvalidInput, match="head_dim 48 is not a multiple of 32"):
        attention_decode(rt, out, q, cache, cache, i32, i32, part_out, part_ml)


def test_launcher_rejects_bad_shapes(rt):
    from gpu.errors import InvalidInput
    from gpu.ops.linear import linear

    x = rt.empty((2, 16), rt.operand, "test")
    w = rt.empty((5, 16), rt.operand, "test")
    with pytest.raises(InvalidInput, match="y: shape"):
        linear(rt, rt.empty((2, 4), np.float32, "test"), x, w)
    with pytest.raises(InvalidInput, match="w: dtype"):
        linear(rt, rt.empty((2, 5), np.float32, "test"), x, rt.empty((5, 16), np.float32, "test"))
    with pytest.raises(InvalidInput, match="not a multiple of 8"):
        linear(rt, rt.empty((2, 5), np.float32, "test"), rt.empty((2, 12), rt.operand, "test"),
               rt.empty((5, 12), rt.operand, "test"))
