"""Packed prefill on the device (`pytest -m cuda`): the row gather and reduced-split attention kernels
against numpy / the full-split launch, and the engine-level promises of docs/gpu.md "Packed prefill":
a prompt's logits are bit-identical whatever it is packed with (and however the batch is cut into
passes), prompts packed and prompts run alone agree with the numpy reference, and `prefill_mixed` picks
the same first tokens as the host sampler on `prefill`'s logits.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.cuda

VOCAB = 512


@pytest.fixture(scope="module")
def qwen_path(tmp_path_factory):
    from gguf_loader.synthetic import BYTE_VOCAB, write_synthetic_model

    return write_synthetic_model(tmp_path_factory.mktemp("models") / "qwen2.gguf", arch="qwen2", dim=256,
                                 n_heads=4, n_kv_heads=2, dtype="f16", n_layers=2, vocab=BYTE_VOCAB,
                                 vocab_size=VOCAB, context_length=1024, seed=7)


@pytest.fixture(scope="module")
def rt():
    from gpu.runtime import Runtime

    runtime = Runtime(0, "f16")
    yield runtime
    runtime.close()


def test_gather_rows(rt, rng):
    from gpu import reference as ref
    from gpu.ops.gather_rows import gather_rows

    x = rng.standard_normal((37, 130)).astype(np.float32)
    rows = np.array([36, 0, 5, 5, 17], np.int32)
    out = rt.empty((5, 130), np.float32, "test")
    gather_rows(rt, out, rt.to_device(x, "test"), rt.to_device(rows, "test"))
    rt.synchronize()
    assert np.array_equal(out.get(), ref.embedding(x, rows))  # a row gather: exact


def test_attention_decode_fewer_splits_same_result(rt, rng):
    from gpu.ops.attention_decode import attention_decode, n_splits
    from gpu.runtime import from_operand, to_operand

    n, n_heads, n_kv, hd, max_ctx, splits = 9, 4, 2, 64, 1024, 4
    q = rt.to_device(to_operand(rng.standard_normal((n, n_heads, hd)).astype(np.float32), "f16"), "test")
    caches = [rt.to_device(to_operand(rng.standard_normal((3, n_kv, max_ctx, hd)).astype(np.float32), "f16"),
                           "test") for _ in range(2)]
    slots = rt.to_device(rng.integers(0, 3, n).astype(np.int32), "test")
    pos = rt.to_device(np.array([0, 1, 63, 64, 65, 127, 200, 254, 255], np.int32), "test")
    outs = []
    for s in (n_splits(max_ctx), splits):
        out = rt.empty((n, n_heads * hd), rt.operand, "test")
        part_out = rt.empty((n, n_heads, s, hd), np.float32, "test")
        part_ml = rt.empty((n, n_heads, s, 2), np.float32, "test")
        attention_decode(rt, out, q, *caches, slots, pos, part_out, part_ml, splits=s)
        rt.synchronize()
        outs.append(from_operand(out.get(), "f16"))
    assert np.array_equal(outs[0], outs[1])


def _prefill(engine, prompts):
    slots = [engine.alloc() for _ in prompts]
    logits = engine.prefill(slots, prompts)
    for slot in slots:
        engine.free(slot)
    return logits


def test_packed_logits_do_not_depend_on_neighbours(qwen_path, rng):
    from gpu.cuda_engine import CudaEngine

    gpu = CudaEngine.load(qwen_path, max_batch=8, max_context=1024)
    try:
        target = rng.integers(0, VOCAB, 41).tolist()
        alone = _prefill(gpu, [target])[0]
        for lengths in ([3, 250], [200, 200, 200, 200], [1, 2, 3, 600, 5], [64] * 7):
            others = [rng.integers(0, VOCAB, n).tolist() for n in lengths]
            at = int(rng.integers(0, len(others) + 1))
            got = _prefill(gpu, [*others[:at], target, *others[at:]])[at]
            assert np.array_equal(got, alone), f"packed with {lengths} at {at}"
    finally:
        gpu.close()


def test_packed_graph_replay_equals_eager_passes(qwen_path, rng):
    from gpu.cuda_engine import CudaEngine

    prompts = [rng.integers(0, VOCAB, int(n)).tolist() for n in (5, 40, 17, 3)]  # 65 rows: the 96 bucket
    eager = CudaEngine.load(qwen_path, max_batch=4, max_context=1024, use_graphs=False)
    try:
        want = [_prefill(eager, prompts), _prefill(eager, prompts[1:2])]
    finally:
        eager.close()
    graphs = CudaEngine.load(qwen_path, max_batch=4, max_context=1024)
    try:
        graphs.warm_up()
        assert ("prefill", 96) in graphs.graphs and ("prefill", 48) in graphs.graphs
        assert np.array_equal(_prefill(graphs, prompts), want[0])
        assert np.array_equal(_prefill(graphs, prompts[1:2]), want[1])
    finally:
        graphs.close()


def test_lone_prompt_padding_changes_no_logit(qwen_path, rng):
    """A 300-token prompt runs alone, padded to the 320-row chunk graph, except where 320 rows would pass
    the context (max_context 300): the two give bit-identical logits."""
    from gpu.cuda_engine import CudaEngine

    prompts = [rng.integers(0, VOCAB, 300).tolist()]
    exact = CudaEngine.load(qwen_path, max_batch=1, max_context=300)
    try:
        want = _prefill(exact, prompts)
    finally:
        exact.close()
    padded = CudaEngine.load(qwen_path, max_batch=1, max_context=1024)
    try:
        padded.warm_up()
        assert ("chunk", 320) in padded.graphs
        assert np.array_equal(_prefill(padded, prompts), want)
    finally:
        padded.close()


def test_packed_and_alone_match_reference(qwen_path, rng):
    from gpu.cuda_engine import CudaEngine
    from gpu.numpy_engine import NumpyEngine

    ref = NumpyEngine.load(qwen_path, max_batch=6, max_context=1024)
    gpu = CudaEngine.load(qwen_path, max_batch=6, max_context=1024)
    try:
        lengths = [1, 256, 257, 30, 700, 9]  # packed, packed (ends at 256), alone, packed, alone (2 chunks),
        prompts = [rng.integers(0, VOCAB, n).tolist() for n in lengths]  # packed
        slots = [(ref.alloc(), gpu.alloc())[1] for _ in prompts]
        want, got = ref.prefill(slots, prompts), gpu.prefill(slots, prompts)
        for i, n in enumerate(lengths):
            err = np.linalg.norm(got[i] - want[i]) / np.linalg.norm(want[i])
            assert err <= 2e-2, f"prompt {i} ({n} tokens): rel err {err:.3g}"
        tokens = [int(t) for t in want.argmax(axis=1)]  # the caches the prefill wrote, through a decode
        want, got = ref.decode(slots, tokens), gpu.decode(slots, tokens)
        for i in range(len(lengths)):
            assert np.linalg.norm(got[i] - want[i]) / np.linalg.norm(want[i]) <= 2e-2, f"decode row {i}"
        # a second prompt appended to a packed sequence, from a start > 0, still packs
        more = [rng.integers(0, VOCAB, 20).tolist()]
        want, got = ref.prefill([slots[3]], more), gpu.prefill([slots[3]], more)
        assert np.linalg.norm(got[0] - want[0]) / np.linalg.norm(want[0]) <= 2e-2
    finally:
        gpu.close()


def test_prefill_mixed_picks_the_host_samplers_first_tokens(qwen_path, rng):
    from gpu.cuda_engine import CudaEngine
    from gpu.params import SamplingParams
    from gpu.sampling import Sampler

    gpu = CudaEngine.load(qwen_path, max_batch=8, max_context=1024)
    try:
        prompts = [rng.integers(0, VOCAB, int(n)).tolist() for n in rng.integers(1, 120, 8)]
        params = [SamplingParams(temperature=0.9, top_k=40, top_p=0.95, min_p=0.05, seed=i) for i in range(4)]
        params += [SamplingParams(temperature=0.0, seed=0),
                   SamplingParams(temperature=1.1, repetition_penalty=1.3, seed=9), None, None]
        logits = _prefill(gpu, prompts)
        want = [None if p is None else Sampler(p).sample(logits[i], prompts[i], 0)
                for i, p in enumerate(params)]
        slots = [gpu.alloc() for _ in prompts]
        ids, host = gpu.prefill_mixed(slots, prompts, params, [0] * 8, prompts)
        assert [None if p is None else int(t) for p, t in zip(params, ids, strict=True)] == want
        assert list(ids[6:]) == [-1, -1]
        assert np.array_equal(host[6:], logits[6:])  # host rows: their logits come back
        assert [gpu.seq_len(s) for s in slots] == [len(p) for p in prompts]
    finally:
        gpu.close()
