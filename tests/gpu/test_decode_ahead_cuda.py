"""Decode steps queued ahead on the CUDA engine (`pytest -m cuda`): `launch_decode` fed the tokens the
last launched step picked on the device gives the tokens of `decode_sample` fed them from the host,
penalties included (the fed token joins the penalty window on the device), and `generate_batch` gives
the same tokens with ORCD_DECODE_AHEAD on and off."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def model(tiny_qwen_cuda):
    return tiny_qwen_cuda


def _params(n: int):
    from gpu.params import SamplingParams

    penalties = [{}, {"repetition_penalty": 1.5, "penalty_last_n": 8}, {"frequency_penalty": 0.8},
                 {"presence_penalty": 1.0, "penalty_last_n": -1}]
    return [SamplingParams(temperature=0.0 if i % 3 == 2 else 0.9, top_k=(0, 40, 5)[i % 3], seed=100 + i,
                           **penalties[i % 4]) for i in range(n)]


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_fed_tokens_equal_the_host_fed_loop(model, batch):
    engine, _ = model
    rng = np.random.default_rng(batch)
    prompts = [rng.integers(0, 512, int(rng.integers(2, 30))).tolist() for _ in range(batch)]
    params, steps = _params(batch), 30
    host_slots, fed_slots = [engine.alloc() for _ in prompts], [engine.alloc() for _ in prompts]
    try:
        first = engine.prefill(host_slots, prompts).argmax(axis=1).tolist()
        engine.prefill(fed_slots, prompts)
        want, ids = [], first
        histories = [[*p, t] for p, t in zip(prompts, first, strict=True)]  # prompt + output so far
        for k in range(steps):
            ids = engine.decode_sample(host_slots, ids, params, [k + 1] * batch, histories).tolist()
            want.append(ids)
            for h, t in zip(histories, ids, strict=True):
                h.append(t)
        known = [[*p, t] for p, t in zip(prompts, first, strict=True)]  # what the host has read
        got, pick = [], engine.launch_decode(fed_slots, first, params, [1] * batch, known)
        for k in range(1, steps):  # the fed token is not in `known` yet: the device adds it
            queued = engine.launch_decode(fed_slots, [None] * batch, params, [k + 1] * batch, known)
            got.append(pick.ids().tolist())  # read after the next step was queued
            for h, t in zip(known, got[-1], strict=True):
                h.append(t)
            pick = queued
        got.append(pick.ids().tolist())
        assert got == want
        assert len({t for row in want for t in row}) > 5
        assert [engine.seq_len(s) for s in fed_slots] == [engine.seq_len(s) for s in host_slots]
    finally:
        for slot in host_slots + fed_slots:
            engine.free(slot)


def _fed_loop(engine, slots, prompts, params, steps, other):
    """launch_decode fed from the device for `steps` steps; a prefill of slot `other` halfway (a step that
    reads the inputs between two decode steps). The tokens per step."""
    first = engine.prefill(slots, prompts).argmax(axis=1).tolist()
    known = [[*p, t] for p, t in zip(prompts, first, strict=True)]
    got, pick = [], engine.launch_decode(slots, first, params, [1] * len(slots), known)
    for k in range(1, steps):
        if k == steps // 2:
            engine.prefill([other], [[k, k + 1, k + 2]])
        queued = engine.launch_decode(slots, [None] * len(slots), params, [k + 1] * len(slots), known)
        got.append(pick.ids().tolist())
        for h, t in zip(known, got[-1], strict=True):
            h.append(t)
        pick = queued
    got.append(pick.ids().tolist())
    return got


def test_early_input_copies_give_the_same_tokens(model):
    engine, _ = model
    rng = np.random.default_rng(7)
    prompts = [rng.integers(0, 512, int(rng.integers(2, 30))).tolist() for _ in range(3)]
    params, inputs = _params(3), engine.inputs
    assert inputs.early  # on by default
    out = {}
    for early in (True, False):
        inputs.early = early  # off: every copy on the engine's stream (decode_queued marks nothing)
        slots, other = [engine.alloc() for _ in prompts], engine.alloc()
        before = inputs.early_copies
        try:
            out[early] = _fed_loop(engine, slots, prompts, params, 40, other)
        finally:
            inputs.early = True
            for slot in [*slots, other]:
                engine.free(slot)
        copies = inputs.early_copies - before
        # on: every decode step but the first and the one after the prefill copied early
        assert copies == (38 if early else 0)
    assert out[True] == out[False]
    assert len({t for row in out[True] for t in row}) > 5


def test_launch_decode_refuses_rows_it_cannot_feed(model):
    from gpu.errors import InvalidInput

    engine, _ = model
    a, b = engine.alloc(), engine.alloc()
    try:
        engine.prefill([a, b], [[1, 2, 3], [4, 5]])
        with pytest.raises(InvalidInput, match=f"slot {a}: nothing to feed"):
            engine.launch_decode([a], [None], _params(1), [1], [[]])
        engine.launch_decode([a, b], [7, 8], _params(2), [1, 1], [[], []]).ids()
        with pytest.raises(InvalidInput, match="2 slots but 1 histories"):
            engine.launch_decode([a, b], [None, None], _params(2), [2, 2], [[]])
        engine.decode([b], [9])  # b moved on without a launch: its picked token is stale
        with pytest.raises(InvalidInput, match=f"slot {b}: nothing to feed"):
            engine.launch_decode([b], [None], _params(1), [2], [[]])
        pick = engine.launch_decode([a], [None], _params(1), [2], [[]])
        for k in range(6):  # picks read at once (prefills, waiting steps) between a launch and its read
            engine.decode_sample([b], [k], _params(1), [3 + k], [[]])
        assert len(pick.ids()) == 1
    finally:
        engine.free(a)
        engine.free(b)


def test_generate_batch_same_tokens_ahead_and_waiting(model, monkeypatch):
    from gpu.params import SamplingParams
    from gpu.runner import GenerationRequest, generate_batch

    engine, tok = model
    rng = np.random.default_rng(3)
    requests = [GenerationRequest(rng.integers(0, 256, int(rng.integers(3, 40))).tolist(),
                                  SamplingParams(temperature=0.8, seed=50 + i, max_tokens=5 + 3 * i,
                                                 ignore_eos=i % 2 == 0, stop=["a"] if i % 4 == 1 else [],
                                                 frequency_penalty=0.5 if i % 3 == 0 else 0.0))
                for i in range(20)]  # 20 requests, 16 slots: some join while a step is queued

    def run(ahead: str):
        monkeypatch.setenv("ORCD_DECODE_AHEAD", ahead)
        got: dict[int, list] = {}
        for index, r in generate_batch(engine, tok, requests):
            got.setdefault(index, []).append((r.token_id, r.text, r.finish_reason))
        return got

    want = run("0")
    assert run("1") == want
    assert sum(len(v) for v in want.values()) > 20 * 5
