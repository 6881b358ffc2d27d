"""sample_topk.cu + sample.cu against gpu.sampling.Sampler, on the device (`pytest -m cuda`).

Fresh random logits (some -inf), vocab sizes 1000 / 32064 / 151936, batches up to 16, rows cycling through
parameter sets that take every path of the kernels (greedy, the split path of top-k <= 4096 / chunks,
top-k <= 1024 sorted in shared memory after a full-row select, min-p cuts, top_k = 0 or > 1024 with the
bisection path, penalties). Greedy rows must match exactly; sampled rows on >= 99% of (row, step) cases:
a float64 draw can still land within rounding of a cumulative boundary, which is counted and printed. A
row's tokens are the same alone and inside a batch of 16, and the kernel's uniform equals philox_uniform
bit for bit. sample_topk alone matches its numpy twin (gpu.ops.sample.sample_topk_reference) exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpu.params import SamplingParams
from gpu.sampling import Sampler, philox_uniform

pytestmark = pytest.mark.cuda

PARAM_SETS = [
    SamplingParams(seed=1),  # llama.cpp defaults: T 0.8, top-k 40, top-p 0.95, min-p 0.05
    SamplingParams(temperature=1.0, top_k=0, top_p=0.9, min_p=0.0, seed=2**40 + 3),  # top-p over all ids
    SamplingParams(temperature=1.5, top_k=0, top_p=1.0, min_p=0.1, seed=5),  # min-p alone
    SamplingParams(temperature=0.7, top_k=2000, top_p=0.8, min_p=0.0, seed=7),  # top-k above the shared list
    SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=2**64 - 1),  # the full distribution
    SamplingParams(temperature=0.9, top_k=50, repetition_penalty=1.3, presence_penalty=0.5,
                   frequency_penalty=0.3, penalty_last_n=16, seed=11),
    SamplingParams(temperature=0.0, repetition_penalty=1.2, penalty_last_n=-1, seed=13),
    SamplingParams(temperature=0.0, seed=17),
    SamplingParams(temperature=1.2, top_k=100, top_p=0.9, min_p=0.0, seed=19),  # split path at every vocab
    SamplingParams(temperature=0.6, top_k=300, top_p=0.99, min_p=0.01, seed=23),  # split below 151936
]


@pytest.fixture(scope="module")
def rt():
    from gpu.runtime import Runtime

    runtime = Runtime(0, "f16")
    yield runtime
    runtime.close()


def gpu_sample(rt, logits, params_list, steps, histories, with_draws=False):
    """Token ids [B] (and the kernel's uniforms [B]) for host logits [B, vocab]."""
    from gpu.ops.sample import pack_params, sample, sample_workspace

    host = pack_params(params_list, steps, histories)
    dev = [rt.to_device(a, "test") for a in host]
    n = logits.shape[0]
    ids = rt.empty((n,), np.int32, "test")
    draws = rt.empty((n,), np.float64, "test") if with_draws else None
    work = sample_workspace(rt, n, logits.shape[1])
    sample(rt, ids, rt.to_device(np.ascontiguousarray(logits, np.float32), "test"), *dev, work, draws=draws)
    rt.synchronize()
    return (ids.get(), draws.get()) if with_draws else ids.get()


def random_logits(rng, batch, vocab):
    logits = rng.normal(0.0, 2.0, (batch, vocab)).astype(np.float32)  # [B, vocab]
    logits[rng.integers(0, batch, 8), rng.integers(0, vocab, 8)] = -np.inf
    return logits


def random_history(rng, vocab):
    return [*rng.integers(0, 50, 24).tolist(), *rng.integers(0, vocab, 40).tolist()]  # repeats among 0..49


def test_uniform_is_philox_bit_for_bit(rt, rng):
    seeds = [0, 1, 2**32 - 1, 2**32, 2**64 - 1, 12345678901234567, *rng.integers(0, 2**63, 4).tolist()]
    steps = [0, 1, 7, 2**31, 2**32 - 1, *rng.integers(0, 2**32, 3).tolist()]
    cases = [(s, t) for s in seeds for t in steps]
    params = [SamplingParams(temperature=0.0, seed=s) for s, _ in cases]
    _, draws = gpu_sample(rt, random_logits(rng, len(cases), 1000), params, [t for _, t in cases],
                          [[] for _ in cases], with_draws=True)
    want = np.array([philox_uniform(s, t) for s, t in cases])
    assert draws.tolist() == want.tolist()


@pytest.mark.parametrize("vocab", [1000, 32064, 151936])
def test_matches_numpy_sampler(rt, rng, vocab):
    batch, n_steps = 16, 4 if vocab > 100_000 else 8
    params = [PARAM_SETS[i % len(PARAM_SETS)] for i in range(batch)]
    samplers = [Sampler(p) for p in params]
    sampled = mismatched = 0
    for step in range(n_steps):
        logits = random_logits(rng, batch, vocab)
        histories = [random_history(rng, vocab) for _ in range(batch)]
        got = gpu_sample(rt, logits, params, [step] * batch, histories)
        want = [s.sample(logits[i], histories[i], step) for i, s in enumerate(samplers)]
        for i in range(batch):
            if params[i].greedy:
                assert got[i] == want[i], f"greedy row {i} step {step}: gpu {got[i]}, numpy {want[i]}"
                continue
            sampled += 1
            if got[i] != want[i]:
                mismatched += 1
                print(f"row {i} step {step} {params[i]}: gpu {got[i]} (logit {logits[i, got[i]]}), "
                      f"numpy {want[i]} (logit {logits[i, want[i]]})")
    print(f"vocab {vocab}: {mismatched} of {sampled} sampled cases differ")
    assert mismatched <= 0.01 * sampled


def test_row_alone_equals_row_in_batch_of_16(rt, rng):
    vocab, batch = 32064, 16
    params = [PARAM_SETS[i % len(PARAM_SETS)] for i in range(batch)]
    for step in range(32):
        logits = random_logits(rng, batch, vocab)
        histories = [random_history(rng, vocab) for _ in range(batch)]
        together = gpu_sample(rt, logits, params, [step] * batch, histories)
        alone = [int(gpu_sample(rt, logits[i : i + 1], params[i : i + 1], [step], histories[i : i + 1])[0])
                 for i in range(batch)]
        assert together.tolist() == alone, f"step {step}"


def test_batch_sizes_1_to_16_give_the_same_ids(rt, rng):
    vocab = 1000
    logits = random_logits(rng, 16, vocab)
    params = [PARAM_SETS[i % len(PARAM_SETS)] for i in range(16)]
    histories = [random_history(rng, vocab) for _ in range(16)]
    full = gpu_sample(rt, logits, params, [3] * 16, histories)
    for batch in (1, 2, 5, 9, 16):
        assert gpu_sample(rt, logits[:batch], params[:batch], [3] * batch, histories[:batch]).tolist() == \
            full[:batch].tolist()


def test_nan_row_and_all_inf_row_give_minus_one(rt):
    logits = np.zeros((3, 100), np.float32)  # [3, 100]
    logits[0, 5] = np.nan
    logits[1] = -np.inf
    params = SamplingParams(seed=1)
    ids = gpu_sample(rt, logits, [params] * 3, [0] * 3, [[]] * 3)
    tie = Sampler(params).sample(logits[2], [], 0)  # every logit ties: top-k keeps the lowest 40 ids
    assert ids.tolist() == [-1, -1, tie]


def test_pack_params_refuses_unresolved_seed_and_logit_bias():
    from gpu.errors import InvalidInput
    from gpu.ops.sample import pack_params

    with pytest.raises(InvalidInput, match=r"params_list\[0\].seed"):
        pack_params([SamplingParams()], [0], [[]])
    with pytest.raises(InvalidInput, match="logit_bias"):
        pack_params([SamplingParams(seed=1, logit_bias={3: 1.0})], [0], [[]])


def test_engine_decode_sample_matches_host_sampling(tmp_path):
    from gguf_loader.synthetic import BYTE_VOCAB, write_synthetic_model
    from gpu.cuda_engine import CudaEngine

    path = write_synthetic_model(tmp_path / "llama.gguf", arch="llama", dim=256, n_heads=4, n_kv_heads=2,
                                 dtype="f16", n_layers=2, vocab=BYTE_VOCAB, vocab_size=512,
                                 context_length=1024, seed=3)
    eng = CudaEngine.load(path, max_batch=4, max_context=256)
    try:
        prompt = np.random.default_rng().integers(0, 512, 20).tolist()
        host_slot, gpu_slot = eng.alloc(), eng.alloc()
        params = SamplingParams(temperature=1.0, top_k=0, top_p=0.95, min_p=0.0, repetition_penalty=1.1,
                                seed=99)
        sampler = Sampler(params)
        logits = eng.prefill([host_slot, gpu_slot], [prompt, prompt])
        history = [*prompt, int(logits[0].argmax())]
        mismatched = 0
        for step in range(32):
            want = sampler.sample(eng.decode([host_slot], history[-1:])[0], history, step)
            got = eng.decode_sample([gpu_slot], history[-1:], [params], [step], [history])
            assert got.dtype == np.int32 and got.shape == (1,)
            mismatched += int(got[0] != want)
            history.append(want)  # both slots follow the host's tokens, so their logits stay equal
        print(f"{mismatched} of 32 steps differ")
        assert mismatched <= 1
    finally:
        eng.close()


def _penalised(logits, params_list, histories):
    """logits after the penalties, as sample_topk applies them (float64, rounded to float32)."""
    from gpu.sampling import apply_penalties

    out = logits.copy()
    for i, p in enumerate(params_list):
        if p.penalty_last_n:
            start = 0 if p.penalty_last_n < 0 else max(len(histories[i]) - p.penalty_last_n, 0)
            row = out[i].astype(np.float64)
            apply_penalties(row, histories[i][start:], p.repetition_penalty, p.presence_penalty,
                            p.frequency_penalty)
            out[i] = row.astype(np.float32)
    return out


@pytest.mark.parametrize("vocab", [1000, 4096 * 3 + 17, 151936])
def test_sample_topk_matches_numpy_twin(rt, rng, vocab):
    from gpu.ops import sample as ops

    batch = 12
    params = [PARAM_SETS[i % len(PARAM_SETS)] for i in range(batch)]
    logits = random_logits(rng, batch, vocab)
    logits[1] = np.round(logits[1])  # ties everywhere: the id decides
    logits[2, : vocab // 2] = -np.inf  # chunks with fewer finite logits than top_k
    logits[3, 7] = np.nan
    histories = [random_history(rng, vocab) for _ in range(batch)]
    host = ops.pack_params(params, [0] * batch, histories)
    dev = [rt.to_device(a, "test") for a in host]
    work = ops.sample_workspace(rt, batch, vocab)
    d_logits = rt.to_device(logits, "test")
    ops.sample_topk(rt, d_logits, *dev, work["cand"], work["chunk_best"], work["chunk_info"])
    rt.synchronize()
    want = _penalised(logits, params, histories)
    got_logits = d_logits.get()
    assert np.array_equal(got_logits, want, equal_nan=True)
    best, info, cands = ops.sample_topk_reference(want, [p.top_k for p in params],
                                                  [p.temperature for p in params])
    assert work["chunk_best"].get().tolist() == best.tolist()
    assert work["chunk_info"].get().tolist() == info.tolist()
    cand = work["cand"].get()
    assert cand.shape == (batch, ops.MERGE_CAP)
    n_split = 0
    for r in range(batch):
        k = params[r].top_k
        for c in range(ops.n_chunks(vocab)):
            if c in cands[r]:
                n_split += 1
                got = np.sort(cand[r, c * k : (c + 1) * k])[::-1]
                assert got.tolist() == cands[r][c].tolist(), f"row {r} chunk {c}"
    assert n_split > 0


def test_fed_window_entries_penalise_as_the_tokens_they_stand_for(rt, rng):
    """A window entry -(j + 1) is fed[j] (decode ahead: the token the last launched step picked): the
    penalised logits equal those of the explicit window and the numpy twin's."""
    from gpu.ops import sample as ops

    batch, vocab = 6, 4096 * 2 + 5
    params = [PARAM_SETS[5], PARAM_SETS[6]] * 3  # penalties over the last 16 / over all ids
    fed = rng.integers(0, 50, 12).astype(np.int32)  # among the histories' repeated ids
    slots = rng.integers(0, 12, batch)
    histories = [[*random_history(rng, vocab), -(1 + int(j))] for j in slots]
    explicit = [[*h[:-1], int(fed[j])] for h, j in zip(histories, slots, strict=True)]
    logits = random_logits(rng, batch, vocab)
    work = ops.sample_workspace(rt, batch, vocab)
    got = []
    for hist, feed in ((histories, rt.to_device(fed, "test")), (explicit, None)):
        dev = [rt.to_device(a, "test") for a in ops.pack_params(params, [0] * batch, hist)]
        d_logits = rt.to_device(logits, "test")
        ops.sample_topk(rt, d_logits, *dev, work["cand"], work["chunk_best"], work["chunk_info"], fed=feed)
        rt.synchronize()
        got.append(d_logits.get())
    assert np.array_equal(got[0], got[1])
    assert np.array_equal(got[0], _penalised(logits, params, explicit))
    assert not np.array_equal(got[0], logits)


def test_ties_and_sparse_rows_match_numpy_sampler(rt, rng):
    vocab, batch = 151936, 16
    params = [PARAM_SETS[i % len(PARAM_SETS)] for i in range(batch)]
    samplers = [Sampler(p) for p in params]
    sampled = mismatched = 0
    for step in range(3):
        logits = np.round(random_logits(rng, batch, vocab) * 4) / 4  # many exact ties
        logits[::3, : vocab - 50] = -np.inf  # rows with fewer finite logits than some top_k
        histories = [random_history(rng, vocab) for _ in range(batch)]
        got = gpu_sample(rt, logits, params, [step] * batch, histories)
        for i, s in enumerate(samplers):
            want = s.sample(logits[i], histories[i], step)
            if params[i].greedy:
                assert got[i] == want, f"greedy row {i} step {step}"
            else:
                sampled += 1
                mismatched += int(got[i] != want)
    print(f"{mismatched} of {sampled} sampled cases differ")
    assert mismatched <= 0.01 * sampled + 1
