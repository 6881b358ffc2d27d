"""The tensor-core gemm (gpu/kernels/gemm.cu, gemm_reduce.cu; gpu/ops/gemm.py) against numpy, in every tile
config and K split the selection can pick, and its row invariance: a row's output bits do not depend on
how many rows are computed with it nor where it sits among them (the engine packs several prompts into one
pass on that promise).

Inputs are rounded to the operand type first and numpy runs in float32 on those same values; outputs are
float32 sums, so the relative error ||out - ref|| / ||ref|| stays under 1e-4. Outputs are poisoned with NaN
before each plain launch, so an element the kernel forgot to write fails the test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpu import reference as ref
from tests.gpu.device_arrays import empty, f32, get, operand, rel_err

pytestmark = pytest.mark.cuda

# (N, K) of the prefill projections: Qwen2.5-0.5B qkv, o, gate|up, down; Phi-3-mini the same
MODEL_SHAPES = [(1152, 896), (896, 896), (9728, 896), (896, 4864),
                (9216, 3072), (3072, 3072), (16384, 3072), (3072, 8192)]
# gpu.ops.gemm.CONFIGS by name (BMxBNxBKsSTAGESwWMWN), spelled out so that collection needs no PyCUDA
CONFIG_NAMES = ["128x256x64s3w24", "128x128x64s3w24", "128x64x64s4w22", "64x64x64s4w22", "32x64x32s4w22",
                "128x128x64s3w22"]


def picks(rt) -> set[tuple[str, int]]:
    """Every (config name, splits) that gemm's selection can pick on this device, over M and the model
    shapes plus odd ones."""
    from gpu.ops import gemm as G

    out = set()
    for n, k in [*MODEL_SHAPES, (517, 1000), (77, 64), (130, 4096), (2304, 256), (1001, 9000), (64, 20000)]:
        splits = G.split_k(k, G.splits_for(rt, n, k))[1]
        for m in (1, 5, 32, 33, 65, 100, 128, 256, 300, 512, 700, 1024, 4096):
            out.add((G.config_for(rt, m, n, k, splits).name, splits))
    return out


def test_every_config_is_a_prebuilt_variant():
    from gpu import kernel_cache
    from gpu.ops import gemm as G

    assert sorted(G.CONFIGS) == sorted(CONFIG_NAMES)
    variants = [dict(sorted(v.items())) for v in kernel_cache.VARIANTS["gemm"]]
    for cfg in G.CONFIGS.values():
        assert dict(sorted(cfg.defines.items())) in variants, cfg.name


def test_split_choice_depends_on_n_and_k_only(rt):
    from gpu.ops import gemm as G

    for n, k in MODEL_SHAPES:
        k_len, splits = G.split_k(k, G.splits_for(rt, n, k))
        assert k_len % G.SPLIT_ALIGN == 0 or splits == 1
        assert (splits - 1) * k_len < k <= splits * k_len


@pytest.mark.parametrize("config", CONFIG_NAMES)
@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize(("m", "n", "k"), [(77, 517, 1000), (300, 130, 264)])
@pytest.mark.parametrize("mode", ["plain", "bias+accumulate"])
def test_config_matches_numpy(rt, rng, config, splits, m, n, k, mode):
    from gpu.ops import gemm as G

    x, x_f = operand(rt, rng.standard_normal((m, k), dtype=np.float32))
    w, w_f = operand(rt, rng.standard_normal((n, k), dtype=np.float32) / np.float32(math.sqrt(k)))
    if mode == "plain":
        y = empty(rt, (m, n), np.float32)
        G.launch(rt, y, x, w, None, False, G.CONFIGS[config], splits)
        want = ref.linear(x_f, w_f)
    else:
        bias = rng.standard_normal(n, dtype=np.float32)
        resid = rng.standard_normal((m, n), dtype=np.float32)
        y = f32(rt, resid)
        G.launch(rt, y, x, w, f32(rt, bias), True, G.CONFIGS[config], splits)
        want = ref.add(resid, ref.linear(x_f, w_f, bias))
    assert rel_err(get(rt, y), want) <= 1e-4


def test_every_pick_matches_numpy(rt, rng):
    """The (config, splits) pairs the selection can pick, on a shape where K splits and N is odd."""
    from gpu.ops import gemm as G

    m, n, k = 133, 261, 2048
    x, x_f = operand(rt, rng.standard_normal((m, k), dtype=np.float32))
    w, w_f = operand(rt, rng.standard_normal((n, k), dtype=np.float32) / np.float32(math.sqrt(k)))
    bias = rng.standard_normal(n, dtype=np.float32)
    resid = rng.standard_normal((m, n), dtype=np.float32)
    want = ref.add(resid, ref.linear(x_f, w_f, bias))
    for name, splits in sorted(picks(rt)):
        y = f32(rt, resid)
        G.launch(rt, y, x, w, f32(rt, bias), True, G.CONFIGS[name], splits)
        assert rel_err(get(rt, y), want) <= 1e-4, (name, splits)


@pytest.mark.parametrize(("m", "n", "k"), [(1, 1001, 776), (5, 896, 4864), (65, 517, 1000), (700, 896, 4864),
                                            (512, 1152, 896), (1024, 2304, 256), (129, 3072, 8192)])
@pytest.mark.parametrize("mode", ["plain", "bias+accumulate"])
def test_gemm_matches_numpy(rt, rng, m, n, k, mode):
    from gpu.ops.gemm import gemm

    x, x_f = operand(rt, rng.standard_normal((m, k), dtype=np.float32))
    w, w_f = operand(rt, rng.standard_normal((n, k), dtype=np.float32) / np.float32(math.sqrt(k)))
    if mode == "plain":
        y = empty(rt, (m, n), np.float32)
        gemm(rt, y, x, w)
        want = ref.linear(x_f, w_f)
    else:
        bias = rng.standard_normal(n, dtype=np.float32)
        resid = rng.standard_normal((m, n), dtype=np.float32)
        y = f32(rt, resid)
        gemm(rt, y, x, w, f32(rt, bias), accumulate=True)
        want = ref.add(resid, ref.linear(x_f, w_f, bias))
    assert rel_err(get(rt, y), want) <= 1e-4


def among_random_rows(rng, m: int, probes, probe_resid):
    """m random input rows [m, K] and residual rows [m, N] with the probe rows at random distinct places:
    (those places, inputs, residuals)."""
    where = rng.choice(m, len(probes), replace=False)
    xs = rng.standard_normal((m, probes.shape[1]), dtype=np.float32)
    resid = rng.standard_normal((m, probe_resid.shape[1]), dtype=np.float32)
    xs[where], resid[where] = probes, probe_resid
    return where, xs, resid


@pytest.mark.parametrize(("n", "k"), MODEL_SHAPES)
def test_row_does_not_depend_on_its_neighbours(rt, rng, n, k):
    """Probe rows computed alone (M = 1) and at random places among M = 5, 77, 512, 700 random rows give
    bitwise equal outputs, with bias and the accumulated residual."""
    from gpu.ops.gemm import gemm

    probes = rng.standard_normal((5, k), dtype=np.float32)
    probe_resid = rng.standard_normal((5, n), dtype=np.float32)
    w, _ = operand(rt, rng.standard_normal((n, k), dtype=np.float32) / np.float32(math.sqrt(k)))
    bias = f32(rt, rng.standard_normal(n, dtype=np.float32))
    alone = []
    for i in range(5):
        x, _ = operand(rt, probes[i : i + 1])
        y = f32(rt, probe_resid[i : i + 1])
        gemm(rt, y, x, w, bias, accumulate=True)
        alone.append(get(rt, y)[0])
    for m in (5, 77, 512, 700):
        where, xs, resid = among_random_rows(rng, m, probes, probe_resid)
        x, _ = operand(rt, xs)
        y = f32(rt, resid)
        gemm(rt, y, x, w, bias, accumulate=True)
        out = get(rt, y)
        for i, row in enumerate(where):
            assert np.array_equal(out[row], alone[i]), f"probe {i} at row {row} of {m} differs from alone"


@pytest.mark.parametrize(("n", "k"), MODEL_SHAPES)
def test_row_bits_are_the_same_in_every_config(rt, rng, n, k):
    """For each K split the launcher could be given, probe rows computed alone (M = 1, 32 x 64 tiles) and
    at random places among 700 rows in every tile config give bitwise equal outputs: the selection may
    switch configs (and M) without moving a bit."""
    import pycuda.driver as cuda

    from gpu.ops import gemm as G

    probes = rng.standard_normal((5, k), dtype=np.float32)
    probe_resid = rng.standard_normal((5, n), dtype=np.float32)
    w, _ = operand(rt, rng.standard_normal((n, k), dtype=np.float32) / np.float32(math.sqrt(k)))
    bias = f32(rt, rng.standard_normal(n, dtype=np.float32))
    where, xs, resid = among_random_rows(rng, 700, probes, probe_resid)
    x, _ = operand(rt, xs)
    y = f32(rt, resid)
    used = set()
    for splits in (1, 2, 3, 4):
        splits = G.split_k(k, splits)[1]
        if splits in used:
            continue
        used.add(splits)
        alone = []
        for i in range(5):
            xi, _ = operand(rt, probes[i : i + 1])
            yi = f32(rt, probe_resid[i : i + 1])
            G.launch(rt, yi, xi, w, bias, True, G.CONFIGS["32x64x32s4w22"], splits)
            alone.append(get(rt, yi)[0])
        for name in CONFIG_NAMES:
            cuda.memcpy_htod(y.gpudata, resid)
            G.launch(rt, y, x, w, bias, True, G.CONFIGS[name], splits)
            rt.synchronize()
            for i, row in enumerate(where):
                got = y[int(row) : int(row) + 1].get()[0]
                assert np.array_equal(got, alone[i]), f"{name}, {splits} splits: row {row} differs from alone"


def test_split_k_is_deterministic_and_uses_one_scratch(rt, rng):
    from gpu.ops import gemm as G

    m, n, k = 700, 896, 4864
    x, _ = operand(rt, rng.standard_normal((m, k), dtype=np.float32))
    w, _ = operand(rt, rng.standard_normal((n, k), dtype=np.float32) / np.float32(math.sqrt(k)))
    outs = []
    for _ in range(3):
        y = empty(rt, (m, n), np.float32)
        G.launch(rt, y, x, w, None, False, G.CONFIGS["128x128x64s3w24"], 4)
        outs.append(get(rt, y))
    assert all(np.array_equal(o, outs[0]) for o in outs)
    held = rt.allocated["scratch"]
    G.launch(rt, empty(rt, (m, n), np.float32), x, w, None, False, G.CONFIGS["64x64x64s4w22"], 4)
    G.launch(rt, empty(rt, (3, n), np.float32), x[:3], w, None, False, G.CONFIGS["32x64x32s4w22"], 2)
    assert rt.allocated["scratch"] == held, "a call of the same or a smaller need allocated scratch"


def test_rejects_bad_shapes(rt):
    from gpu.errors import InvalidInput
    from gpu.ops.gemm import gemm

    x = rt.empty((2, 16), rt.operand, "test")
    w = rt.empty((5, 16), rt.operand, "test")
    with pytest.raises(InvalidInput, match="y: shape"):
        gemm(rt, rt.empty((2, 4), np.float32, "test"), x, w)
    with pytest.raises(InvalidInput, match="bias: shape"):
        gemm(rt, rt.empty((2, 5), np.float32, "test"), x, w, rt.empty((4,), np.float32, "test"))
    with pytest.raises(InvalidInput, match="not a multiple of 8"):
        gemm(rt, rt.empty((2, 5), np.float32, "test"), rt.empty((2, 12), rt.operand, "test"),
             rt.empty((5, 12), rt.operand, "test"))
