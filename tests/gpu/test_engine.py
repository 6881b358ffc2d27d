"""The engine API on the numpy backend: slots, ragged batches, batch invariance, continuation, errors."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest

from gguf_loader.arch import RopeScaling
from gguf_loader.synthetic import write_synthetic_model
from gpu import model as model_module
from gpu import reference as ops
from gpu.engine import Engine, cuda_available, load_engine
from gpu.errors import (
    BackendUnavailable,
    ContextOverflow,
    EngineError,
    InvalidInput,
    KVCacheFull,
    UnknownSlot,
    UnsupportedModel,
)
from gpu.model import rope_tables
from gpu.numpy_engine import NumpyEngine

MAX_CONTEXT = 300


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model_path(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("engine") / f"{request.param}.gguf"
    return write_synthetic_model(path, request.param, vocab="bytes", dim=64, n_layers=2, scale=0.2)


@pytest.fixture
def engine(model_path):
    return load_engine(model_path, backend="numpy", max_batch=4, max_context=MAX_CONTEXT)


def prompt(seed: int, length: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, 512, length).tolist()


def test_load_engine_attributes(engine):
    assert isinstance(engine, Engine) and engine.backend == "numpy"
    assert (engine.max_batch, engine.max_context, engine.config.vocab_size) == (4, MAX_CONTEXT, 512)


def test_max_context_is_capped_at_the_models_context_length(model_path):
    engine = load_engine(model_path, backend="numpy", max_batch=1, max_context=10**6)
    assert engine.max_context == engine.config.context_length  # 1024 (gpt2) or 2048 (llama)


def test_auto_backend_is_numpy_without_cuda(model_path):
    if cuda_available():
        pytest.skip("a CUDA device is present: auto picks cuda")
    assert load_engine(model_path, max_batch=1, max_context=16).backend == "numpy"
    if importlib.util.find_spec("pycuda") is None:
        with pytest.raises(BackendUnavailable, match="cuda backend cannot be imported"):
            load_engine(model_path, backend="cuda")


def test_unknown_backend(model_path):
    with pytest.raises(BackendUnavailable, match="unknown backend 'tpu'; choose one of auto, numpy, cuda"):
        load_engine(model_path, backend="tpu")


def test_slots_alloc_free_and_full(engine):
    slots = [engine.alloc() for _ in range(4)]
    assert slots == [0, 1, 2, 3]
    with pytest.raises(KVCacheFull):
        engine.alloc()
    engine.prefill([2], [[5, 6, 7]])
    assert engine.seq_len(2) == 3
    engine.free(2)
    assert engine.alloc() == 2 and engine.seq_len(2) == 0


def test_ragged_prefill_equals_each_prompt_alone(model_path, engine):
    prompts = [prompt(1, 7), prompt(2, 1), prompt(3, 20)]
    slots = [engine.alloc() for _ in prompts]
    batched = engine.prefill(slots, prompts)
    assert batched.shape == (3, 512) and batched.dtype == np.float32
    assert [engine.seq_len(s) for s in slots] == [7, 1, 20]
    for row, p in enumerate(prompts):
        alone = load_engine(model_path, backend="numpy", max_batch=1, max_context=MAX_CONTEXT)
        np.testing.assert_array_equal(alone.prefill([alone.alloc()], [p])[0], batched[row])


def test_decode_is_batch_invariant(model_path, engine):
    """A sequence's logits are bit-identical alone, in a batch of 4, and at any row of the batch."""
    prompts = [prompt(10 + i, 3 + 2 * i) for i in range(4)]
    slots = [engine.alloc() for _ in prompts]
    engine.prefill(slots, prompts)
    alone = load_engine(model_path, backend="numpy", max_batch=1, max_context=MAX_CONTEXT)
    solo = alone.alloc()
    alone.prefill([solo], [prompts[2]])
    for step in range(5):
        order = slots[step % 4 :] + slots[: step % 4]  # rotate which row slot 2 sits in
        tokens = [(7 * s + step) % 512 for s in order]
        batched = engine.decode(order, tokens)
        single = alone.decode([solo], [tokens[order.index(2)]])
        np.testing.assert_array_equal(batched[order.index(2)], single[0])
    assert engine.seq_len(2) == alone.seq_len(solo) == len(prompts[2]) + 5


def test_prefill_then_decode_equals_teacher_forced_logits(engine):
    seq = prompt(4, 12)
    a, b = engine.alloc(), engine.alloc()
    every = engine.prefill_all_logits(a, seq)  # [12, vocab]
    assert every.shape == (12, 512)
    steps = [engine.prefill([b], [seq[:5]])[0]]  # then continue: a second prefill, then decodes
    steps.append(engine.prefill([b], [seq[5:8]])[0])
    steps += [engine.decode([b], [t])[0] for t in seq[8:]]
    expected = every[[4, 7, 8, 9, 10, 11]]
    np.testing.assert_allclose(np.stack(steps), expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_long_prefill_uses_attention_chunks(engine, monkeypatch):
    seq = prompt(5, 70)
    a, b = engine.alloc(), engine.alloc()
    whole = engine.prefill_all_logits(a, seq)
    monkeypatch.setattr(model_module, "ATTENTION_CHUNK", 16)  # 70 queries -> 5 chunks
    chunked = engine.prefill_all_logits(b, seq)
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-5 * np.abs(whole).max())


def test_errors_name_the_slot_and_leave_state_unchanged(engine):
    a, b = engine.alloc(), engine.alloc()
    engine.prefill([a], [prompt(6, MAX_CONTEXT - 2)])
    with pytest.raises(
        ContextOverflow,
        match=f"slot {a}: {MAX_CONTEXT - 2} cached \\+ 3 new tokens exceed max_context {MAX_CONTEXT}",
    ):
        engine.prefill([b, a], [[1], [1, 2, 3]])
    assert engine.seq_len(a) == MAX_CONTEXT - 2 and engine.seq_len(b) == 0  # nothing committed
    engine.decode([a], [1])
    engine.decode([a], [2])
    with pytest.raises(ContextOverflow, match=f"slot {a}: {MAX_CONTEXT} cached \\+ 1 new"):
        engine.decode([a], [3])
    with pytest.raises(UnknownSlot, match="slot 3 is not allocated"):
        engine.decode([3], [1])
    with pytest.raises(InvalidInput, match="slot 1: token id 512 outside \\[0, 512\\)"):
        engine.prefill([b], [[1, 512]])
    with pytest.raises(InvalidInput, match="slot 1: token id -1"):
        engine.decode([b], [-1])
    with pytest.raises(InvalidInput, match="slot 1: empty prompt"):
        engine.prefill([b], [[]])
    with pytest.raises(InvalidInput, match="name a slot more than once"):
        engine.prefill([b, b], [[1], [2]])
    with pytest.raises(InvalidInput, match="2 slots but 1 token_ids"):
        engine.decode([a, b], [1])
    with pytest.raises(InvalidInput, match="empty batch"):
        engine.decode([], [])
    assert engine.seq_len(b) == 0
    assert all(issubclass(e, EngineError) for e in (ContextOverflow, UnknownSlot, InvalidInput))


def test_unknown_activation_is_refused(model_path):
    engine = load_engine(model_path, backend="numpy", max_batch=1, max_context=8)
    config = dataclasses.replace(engine.config, activation="relu2")
    with pytest.raises(UnsupportedModel, match="activation 'relu2' is not implemented"):
        NumpyEngine(config, engine.model.params, 1, 8)


def test_rope_tables_pick_longrope_factors_by_max_context(model_path):
    config = load_engine(model_path, backend="numpy", max_batch=1, max_context=8).config
    short, long = (1.0,) * 8, tuple(1.0 + i for i in range(8))
    config = dataclasses.replace(
        config,
        rope="neox",
        rope_dim=16,
        rope_theta=10000.0,
        rope_scaling=RopeScaling(short, long, original_context_length=64, attn_factor=1.2),
    )
    for max_context, factors in ((64, short), (65, long)):
        cos, sin = rope_tables(config, max_context)
        exp_cos, exp_sin = ops.rope_cos_sin(
            np.arange(max_context), ops.rope_inv_freq(16, 1e4, np.array(factors)), 1.2
        )
        np.testing.assert_array_equal(cos, exp_cos)
        np.testing.assert_array_equal(sin, exp_sin)
    linear = dataclasses.replace(config, rope_scaling=None, rope_freq_scale=0.25)
    cos, _ = rope_tables(linear, 40)
    np.testing.assert_allclose(cos[40 - 1], np.cos(39 * 0.25 * ops.rope_inv_freq(16, 1e4)), rtol=1e-6)
