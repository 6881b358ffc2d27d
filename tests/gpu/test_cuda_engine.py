"""The CUDA engine against the numpy reference engine, on the device (`pytest -m cuda`).

Synthetic random-weight models of all four architectures: ragged prefill, then 16 batched decode steps
(the first step of a batch size runs eagerly, the rest replay its CUDA graph), every logit row within
relative error 2e-2 of the reference. A seeded sampled request yields the same tokens alone and inside
a batch of 16. On the real SmolLM2, teacher-forced top-1 agreement with the reference >= 99% over 256
positions (the file comes from $ORCD_SMOLLM2_GGUF on the device, else the asset cache).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.cuda

MODELS = {  # name -> write_synthetic_model arguments (byte vocab: no vocab file needed on the device)
    "llama-f16": dict(arch="llama", dim=256, n_heads=4, n_kv_heads=2, dtype="f16"),
    "qwen2-q8_0-tied": dict(arch="qwen2", dim=256, n_heads=4, n_kv_heads=2, dtype="q8_0", tied=True),
    "phi3-f16-hd96": dict(arch="phi3", dim=288, n_heads=3, n_kv_heads=3, dtype="f16"),
    "gpt2-f16": dict(arch="gpt2", dim=256, n_heads=4, dtype="f16"),
    "llama-q8_0": dict(arch="llama", dim=256, n_heads=4, n_kv_heads=2, dtype="q8_0"),
    "phi3-q8_0-hd96": dict(arch="phi3", dim=288, n_heads=3, n_kv_heads=3, dtype="q8_0"),
    "gpt2-q8_0": dict(arch="gpt2", dim=256, n_heads=4, dtype="q8_0"),
}


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    assert np.isfinite(got).all()
    return float(np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want))


@pytest.fixture(scope="module")
def model_paths(tmp_path_factory):
    from gguf_loader.synthetic import BYTE_VOCAB, write_synthetic_model

    root = tmp_path_factory.mktemp("models")
    return {
        name: write_synthetic_model(root / f"{name}.gguf", n_layers=2, vocab=BYTE_VOCAB, vocab_size=512,
                                    context_length=1024, seed=i, **kwargs)
        for i, (name, kwargs) in enumerate(MODELS.items())
    }


def _engines(path, max_batch, max_context, dtype="f16"):
    from gpu.cuda_engine import CudaEngine
    from gpu.numpy_engine import NumpyEngine

    return (NumpyEngine.load(path, max_batch=max_batch, max_context=max_context),
            CudaEngine.load(path, max_batch=max_batch, max_context=max_context, dtype=dtype))


@pytest.mark.parametrize(("name", "dtype"), [*((n, "f16") for n in MODELS), ("llama-f16", "bf16")])
def test_forward_matches_reference(model_paths, name, dtype):
    ref, gpu = _engines(model_paths[name], max_batch=4, max_context=1024, dtype=dtype)
    try:
        rng = np.random.default_rng()
        lengths = [37, 90, 600] if name.startswith("llama") else [37, 90]  # 600 > one 512-token chunk
        prompts = [rng.integers(0, 512, n).tolist() for n in lengths]
        slots = [(ref.alloc(), gpu.alloc())[1] for _ in prompts]
        want, got = ref.prefill(slots, prompts), gpu.prefill(slots, prompts)
        for i in range(len(prompts)):
            assert rel_err(got[i], want[i]) <= 2e-2, f"prefill row {i} (length {lengths[i]})"
        for step in range(16):
            tokens = [int(t) for t in want.argmax(axis=1)]  # the reference's greedy tokens for both
            want, got = ref.decode(slots, tokens), gpu.decode(slots, tokens)
            for i in range(len(prompts)):
                assert rel_err(got[i], want[i]) <= 2e-2, f"decode step {step} row {i}"
        assert gpu.graphs is not None, "decode ran without CUDA graphs"
        assert [gpu.seq_len(s) for s in slots] == [n + 16 for n in lengths]
    finally:
        gpu.close()


@pytest.mark.parametrize("name", ["qwen2-q8_0-tied", "llama-q8_0", "phi3-q8_0-hd96", "gpt2-q8_0"])
def test_q8_0_weights_give_the_bits_of_their_dequantised_copy(model_paths, monkeypatch, name):
    """Q8_0 matrices kept as Q8Matrix (gemv and the gather read them, gemm expands them) compute exactly
    what the engine computes from the same file dequantised at load ($ORCD_Q8_WEIGHTS=0), in ~half the
    bytes: packed and chunked prefill, all-row logits (the head over 64 rows) and graph-replayed decode."""
    from gpu import cuda_weights
    from gpu.cuda_engine import CudaEngine
    from gpu.ops.dequant_q8 import Q8Matrix

    rng = np.random.default_rng()
    prompts = [rng.integers(0, 512, n).tolist() for n in (5, 70, 600)]
    results, weight_bytes = [], []
    for q8 in (True, False):
        monkeypatch.setattr(cuda_weights, "Q8_WEIGHTS", q8)
        eng = CudaEngine.load(model_paths[name], max_batch=4, max_context=1024)
        try:
            assert isinstance(eng.weights.layers[0].w_down, Q8Matrix) == q8
            assert isinstance(eng.weights.output, Q8Matrix) == q8
            slots = [eng.alloc() for _ in prompts]
            out = [eng.prefill(slots, prompts)]
            for _ in range(6):
                out.append(eng.decode(slots, [int(t) for t in out[-1].argmax(axis=1)]))
            eng.free(slots[0])
            out.append(eng.prefill_all_logits(eng.alloc(), prompts[1] + prompts[0]))
            results.append(out)
            weight_bytes.append(eng.rt.allocated["weights"])
        finally:
            eng.close()
    for step, (got, want) in enumerate(zip(*results, strict=True)):
        assert np.array_equal(got, want), f"result {step} differs"
    assert weight_bytes[0] < 0.65 * weight_bytes[1]


def test_prefill_all_logits_matches_reference(model_paths):
    ref, gpu = _engines(model_paths["qwen2-q8_0-tied"], max_batch=2, max_context=1024)
    try:
        tokens = np.random.default_rng().integers(0, 512, 130).tolist()
        ref.alloc(), gpu.alloc()
        want, got = ref.prefill_all_logits(0, tokens), gpu.prefill_all_logits(0, tokens)
        assert got.shape == (130, 512)
        assert rel_err(got, want) <= 2e-2
        assert (got.argmax(axis=1) == want.argmax(axis=1)).mean() >= 0.95
    finally:
        gpu.close()


def _sample_run(engine, requests, n_tokens):
    """Generate n_tokens for each (prompt, params) together; returns the token lists."""
    from gpu.sampling import Sampler

    samplers = [Sampler(params) for _, params in requests]
    slots = [engine.alloc() for _ in requests]
    histories = [list(prompt) for prompt, _ in requests]
    logits = engine.prefill(slots, [prompt for prompt, _ in requests])
    outputs = [[] for _ in requests]
    for step in range(n_tokens):
        tokens = [s.sample(logits[i], histories[i], step) for i, s in enumerate(samplers)]
        for i, t in enumerate(tokens):
            outputs[i].append(t)
            histories[i].append(t)
        logits = engine.decode(slots, tokens)
    for slot in slots:
        engine.free(slot)
    return outputs


def test_seeded_request_same_alone_and_in_batch_of_16(model_paths):
    from gpu.cuda_engine import CudaEngine
    from gpu.params import SamplingParams

    gpu = CudaEngine.load(model_paths["qwen2-q8_0-tied"], max_batch=16, max_context=256)
    try:
        rng = np.random.default_rng()
        target = (rng.integers(0, 512, 21).tolist(), SamplingParams(temperature=0.9, top_p=0.95, seed=1234))
        others = [(rng.integers(0, 512, int(rng.integers(3, 60))).tolist(),
                   SamplingParams(temperature=1.0, seed=int(rng.integers(0, 2**31)))) for _ in range(15)]
        alone = _sample_run(gpu, [target], 24)[0]
        batched = _sample_run(gpu, [*others[:7], target, *others[7:]], 24)[7]
        assert batched == alone
    finally:
        gpu.close()


def test_refuses_what_does_not_fit(model_paths):
    from gpu.cuda_engine import CudaEngine
    from gpu.errors import OutOfMemory

    with pytest.raises(OutOfMemory, match=r"needs [\d.]+ GiB, [\d.]+ GiB free"):
        CudaEngine.load(model_paths["llama-f16"], max_batch=200_000, max_context=1024)


def _smollm2(request) -> Path:
    env = os.environ.get("ORCD_SMOLLM2_GGUF")
    return Path(env) if env else request.getfixturevalue("smollm2_path")


TEXT = (
    "The history of the bicycle begins in the early nineteenth century, when inventors in Europe "
    "experimented with two-wheeled machines pushed along by the rider's feet. The first of these, "
    "the draisine, appeared in 1817 in Germany. It had no pedals, no chain and no brakes, yet it "
    "showed that a person could balance on two wheels in a line. Decades later, French mechanics added "
    "pedals to the front wheel, and the velocipede became a fashion in Paris. Because the pedals turned "
    "the wheel directly, makers enlarged the front wheel to go faster, which produced the tall "
    "penny-farthing, a machine that was quick but dangerous. The safety bicycle of the 1880s solved the "
    "problem with two wheels of equal size and a chain that drove the rear wheel. Pneumatic tyres, "
    "invented soon after, made the ride comfortable, and within a few years millions of people in "
    "Europe and America were cycling to work, to school and into the countryside. The bicycle changed "
    "more than transport: it gave women new freedom of movement, it helped to create good roads, and "
    "its workshops trained the mechanics who would later build the first cars and aeroplanes. Today "
    "bicycles are again popular in crowded cities, where they are often the fastest way to get around."
)


@pytest.mark.slow
def test_smollm2_teacher_forced_top1_agreement(request):
    from gguf_loader.reader import open_gguf
    from gpu.cuda_engine import CudaEngine
    from gpu.numpy_engine import NumpyEngine
    from tokenizer import load_tokenizer

    path = _smollm2(request)
    with open_gguf(path) as gguf:
        ids = load_tokenizer(gguf).encode(TEXT)
    assert len(ids) >= 256
    ids = ids[:256]
    ref = NumpyEngine.load(path, max_batch=1, max_context=512)
    gpu = CudaEngine.load(path, max_batch=1, max_context=512)
    try:
        ref.alloc(), gpu.alloc()
        want = ref.prefill_all_logits(0, ids).argmax(axis=1)
        got = gpu.prefill_all_logits(0, ids).argmax(axis=1)
        agreement = float((got == want).mean())
        print(f"SmolLM2 teacher-forced top-1 agreement: {agreement:.4f} over {len(ids)} positions")
        assert agreement >= 0.99
    finally:
        gpu.close()
