"""Q8_0 weights on the device (`pytest -m cuda`): dequant_q8.cu, gemv.cu with WQ8 and embedding.cu with
TABLE_Q8 against the dequantised matrix rounded to the operand type (`gpu.reference.dequant_q8`). Each
gives exactly the bits of the same kernel over that dequantised matrix, so a Q8_0 model computes what its
dequantised copy would, for about half the bytes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpu import reference as ref
from tests.gpu.device_arrays import empty, f32, get, ints, operand

pytestmark = pytest.mark.cuda


def _q8(rt, rng, n, k, scale=0.02):
    """A random Q8Matrix [n, k] and its dequantised copy (device operand array, f32 host values)."""
    from gpu.ops.dequant_q8 import Q8Matrix

    quants = rng.integers(-128, 128, (n, k), dtype=np.int8)
    quants[0, :4] = [-128, 127, 0, -1]
    scales = (scale * (0.5 + rng.random((n, k // 32)))).astype(np.float16)
    scales[0, 0] = np.float16(3e-7)  # an f16 subnormal: d * q rounds to subnormals too
    scales[-1, -1] = -scales[-1, -1]
    w = Q8Matrix(rt.to_device(quants, "test"), rt.to_device(scales, "test"))
    dense, dense_f = operand(rt, ref.dequant_q8(quants, scales))
    return w, dense, dense_f


@pytest.mark.parametrize(("n", "k"), [(1, 32), (7, 96), (300, 896)])
def test_dequant_q8_rounds_like_the_loader(rt, rng, n, k):
    from gpu.ops.dequant_q8 import dequant_q8

    w, _, want = _q8(rt, rng, n, k)
    out = empty(rt, (n, k))
    dequant_q8(rt, out, w)
    assert np.array_equal(get(rt, out), want)


@pytest.mark.parametrize(("m", "n", "k"), [(1, 1152, 896), (3, 333, 4864), (8, 96, 32), (17, 517, 1024),
                                           (64, 130, 256)])
def test_gemv_q8_is_bit_identical_to_dequantised_weights(rt, rng, m, n, k):
    from gpu.ops.gemv import gemv

    w, dense, dense_f = _q8(rt, rng, n, k, scale=1 / math.sqrt(k) / 64)
    x, x_f = operand(rt, rng.standard_normal((m, k)).astype(np.float32))
    bias = f32(rt, rng.standard_normal(n).astype(np.float32))
    resid = rng.standard_normal((m, n)).astype(np.float32)
    got, want = f32(rt, resid), f32(rt, resid)
    gemv(rt, got, x, w, bias, accumulate=True)
    gemv(rt, want, x, dense, bias, accumulate=True)
    assert np.array_equal(get(rt, got), get(rt, want))
    np.testing.assert_allclose(get(rt, got), resid + ref.linear(x_f, dense_f, get(rt, bias)), rtol=1e-3,
                               atol=1e-3)


@pytest.mark.parametrize("epilogue", ["swiglu", "rope"])
def test_gemv_q8_epilogues_are_bit_identical(rt, rng, epilogue):
    from gpu.ops.gemv import RopeKV, gemv

    m, dim, head_dim, n_heads, n_kv = 5, 256, 64, 6, 2
    n = 2 * 704 if epilogue == "swiglu" else (n_heads + 2 * n_kv) * head_dim
    w, dense, _ = _q8(rt, rng, n, dim, scale=1 / 256)
    x, _ = operand(rt, rng.standard_normal((m, dim)).astype(np.float32))
    bias = f32(rt, rng.standard_normal(n).astype(np.float32))
    outs = []
    for weights in (w, dense):
        if epilogue == "swiglu":
            out = empty(rt, (m, n // 2))
            gemv(rt, out, x, weights, bias, swiglu=True)
            outs.append([get(rt, out)])
        else:
            q_out, kc, vc = empty(rt, (m, n_heads, head_dim)), empty(rt, (2, n_kv, 40, head_dim)), empty(
                rt, (2, n_kv, 40, head_dim))
            slots, pos = ints(rt, [0, 1, 0, 1, 1]), ints(rt, [3, 0, 39, 7, 8])
            gemv(rt, None, x, weights, bias, rope=RopeKV(q_out, kc, vc, slots, pos, head_dim))
            outs.append([get(rt, q_out), get(rt, kc)[[0, 1, 0, 1, 1], :, [3, 0, 39, 7, 8]]])
    for got, want in zip(*outs, strict=True):
        assert np.array_equal(got, want)


@pytest.mark.parametrize("m", [65, 300])
def test_linear_q8_expands_for_the_gemm_or_runs_gemv_over_64_rows(rt, rng, m):
    from gpu.ops import dequant_q8
    from gpu.ops.linear import linear

    n, k = 517, 1024
    w, dense, _ = _q8(rt, rng, n, k, scale=1 / 1024)
    x, _ = operand(rt, rng.standard_normal((m, k)).astype(np.float32))
    want = empty(rt, (m, n), np.float32)
    linear(rt, want, x, dense)
    dequant_q8.reserve(rt, n * k)  # room: expanded, then the same gemm
    got = empty(rt, (m, n), np.float32)
    linear(rt, got, x, w)
    assert np.array_equal(get(rt, got), get(rt, want))
    big, big_dense, _ = _q8(rt, rng, dequant_q8.expansion_room(rt) // k + 8, k, scale=1 / 1024)
    rows = empty(rt, (m, big.shape[0]), np.float32)  # no room: gemv, 64 rows at a time
    linear(rt, rows, x, big)
    want_rows = np.concatenate([_gemv_rows(rt, x, big_dense, r0, min(m, r0 + 64)) for r0 in range(0, m, 64)])
    assert np.array_equal(get(rt, rows), want_rows)


def _gemv_rows(rt, x, w, r0, r1):
    from gpu.ops.gemv import gemv

    y = empty(rt, (r1 - r0, w.shape[0]), np.float32)
    gemv(rt, y, x[r0:r1], w)
    return get(rt, y)


def test_embedding_q8_gathers_the_dequantised_rows(rt, rng):
    from gpu.ops.embedding import embedding

    vocab, dim, n = 301, 96, 9
    table, _, table_f = _q8(rt, rng, vocab, dim, scale=0.01)
    ids = rng.integers(0, vocab, n)
    ids[0] = 0  # the row with the subnormal scale and extreme quants
    out = empty(rt, (n, dim), np.float32)
    embedding(rt, out, ints(rt, ids), table, ints(rt, np.zeros(n)))
    assert np.array_equal(get(rt, out), ref.embedding(table_f, ids))


def test_q8_launchers_name_bad_arguments(rt, rng):
    from gpu.errors import InvalidInput
    from gpu.ops.dequant_q8 import Q8Matrix
    from gpu.ops.gemm import gemm
    from gpu.ops.gemv import gemv

    w, _, _ = _q8(rt, rng, 8, 64)
    x, _ = operand(rt, rng.standard_normal((1, 64)).astype(np.float32))
    y = empty(rt, (1, 8), np.float32)
    bad_scales = Q8Matrix(w.q, rt.to_device(np.zeros((8, 3), np.float16), "test"))
    with pytest.raises(InvalidInput, match=r"w\.d: shape \(8, 3\), expected \(8, 2\)"):
        gemv(rt, y, x, bad_scales)
    odd = Q8Matrix(rt.to_device(np.zeros((8, 40), np.int8), "test"), w.d)
    with pytest.raises(InvalidInput, match="K = 40 is not a multiple of 32"):
        gemv(rt, y, operand(rt, np.zeros((1, 40), np.float32))[0], odd)
    with pytest.raises(InvalidInput, match=r"w\.q: shape \(8, 64\), expected \(-1, 96\)"):
        gemm(rt, empty(rt, (100, 8), np.float32), operand(rt, np.zeros((100, 96), np.float32))[0], w)
