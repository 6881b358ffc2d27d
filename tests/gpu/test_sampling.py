"""Sampler: Philox draws (known answers, order independence), each stage of the chain on hand-made logits,
llama.cpp's penalty arithmetic, the chain's order, logprobs."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu.errors import SamplingError
from gpu.params import SamplingParams
from gpu.sampling import (
    Sampler,
    apply_penalties,
    draw,
    min_p_keep,
    philox4x32_10,
    philox_uniform,
    sorted_candidates,
    token_logprobs,
    top_p_keep,
)

# Random123's kat_vectors for philox4x32_10: (counter, key, output)
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize(("counter", "key", "expected"), KAT)
def test_philox_known_answers(counter, key, expected):
    assert tuple(int(x) for x in philox4x32_10(counter, key)[0]) == expected


def test_philox_vectorised_rows_match_single_calls():
    counters = np.array([c for c, _, _ in KAT], dtype=np.uint32)  # [3, 4]
    keys = np.array([k for _, k, _ in KAT], dtype=np.uint32)  # [3, 2]
    assert philox4x32_10(counters, keys).tolist() == [list(e) for _, _, e in KAT]


def test_philox_uniform_definition():
    # seed 0, step 0: key (0, 0), counter (0, 0, 0, 0) -> x0 = 0x6627E8D5
    assert philox_uniform(0, 0) == (0x6627E8D5 >> 8) / 2**24
    # seed = 0x299F31D0_A4093822 puts (0xA4093822, 0x299F31D0) in the key; step goes in counter word 0
    x0 = int(philox4x32_10([5, 0, 0, 0], [0xA4093822, 0x299F31D0])[0, 0])
    assert philox_uniform(0x299F31D0A4093822, 5) == (x0 >> 8) * 2.0**-24
    with pytest.raises(SamplingError, match="seed"):
        philox_uniform(2**64, 0)
    with pytest.raises(SamplingError, match="step"):
        philox_uniform(1, 2**32)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1)), min_size=1, max_size=12),
       st.randoms(use_true_random=False))
def test_philox_uniform_range_and_call_order_independence(pairs, rnd):
    first = {pair: philox_uniform(*pair) for pair in pairs}
    shuffled = list(pairs)
    rnd.shuffle(shuffled)
    for pair in shuffled:
        u = philox_uniform(*pair)
        assert u == first[pair]
        assert 0.0 <= u < 1.0 and (u * 2**24).is_integer()


def test_philox_uniform_is_roughly_uniform():
    draws = np.array([philox_uniform(12345, step) for step in range(4000)])
    counts = np.histogram(draws, bins=10, range=(0, 1))[0]
    assert counts.min() > 330 and counts.max() < 470  # 400 expected per bin; ±3.5 sigma


# -- stages on hand-made logits ------------------------------------------------------------------------

def test_sorted_candidates_orders_by_logit_then_id_and_cuts_at_k():
    logits = np.array([1.0, 5.0, 3.0, 5.0, 2.0, -np.inf])
    assert sorted_candidates(logits, 0).tolist() == [1, 3, 2, 4, 0]
    assert sorted_candidates(logits, 2).tolist() == [1, 3]
    assert sorted_candidates(logits, 3).tolist() == [1, 3, 2]
    assert sorted_candidates(np.array([5.0, 4.0, 4.0, 4.0, 4.0]), 3).tolist() == [0, 1, 2]
    assert sorted_candidates(np.array([4.0, 4.0, 9.0, 4.0]), 2).tolist() == [2, 0]


def test_top_p_keeps_the_shortest_prefix_reaching_p():
    cand = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert [top_p_keep(cand, p) for p in (0.4, 0.75, 0.81, 0.96, 1.0)] == [1, 2, 3, 4, 4]


def test_min_p_keeps_tokens_above_a_fraction_of_the_best():
    cand = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert [min_p_keep(cand, m) for m in (0.0, 0.05, 0.2, 0.5, 0.7)] == [4, 4, 3, 2, 1]


def test_draw_inverse_cdf():
    cand = np.log(np.array([0.5, 0.25, 0.25]))  # cumulative weights 1, 1.5, 2
    assert [draw(cand, u) for u in (0.0, 0.49, 0.5, 0.74, 0.75, 0.999)] == [0, 0, 1, 1, 2, 2]


def test_penalties_follow_llama_cpp():
    logits = np.array([2.0, -1.0, 0.5, 3.0, 0.0])
    apply_penalties(logits, [0, 1, 1, 3, 3, 3, 4, 99], repeat=2.0, presence=0.5, frequency=0.25)
    # id0 c=1: 2/2 - .25 - .5; id1 c=2: -1*2 - .5 - .5; id2 untouched; id3 c=3: 3/2 - .75 - .5;
    # id4 c=1: 0*2 - .25 - .5; id 99 is outside the vocab
    assert logits.tolist() == [0.25, -3.0, 0.5, 0.25, -0.75]


def test_greedy_picks_the_argmax_lowest_id_on_ties():
    s = Sampler(SamplingParams(temperature=0, seed=1))
    assert s.sample(np.array([0.1, 2.0, -1.0, 2.0], dtype=np.float32), [], 0) == 1
    assert s.sample(np.array([0.1, 2.0, -1.0, 2.5], dtype=np.float32), [], 9) == 3


def test_greedy_sees_bias_and_penalties():
    logits = np.array([0.0, 2.0, 1.9], dtype=np.float32)
    assert Sampler(SamplingParams(temperature=0, logit_bias={0: 3})).sample(logits, [], 0) == 0
    rep = Sampler(SamplingParams(temperature=0, repetition_penalty=1.1))
    assert rep.sample(logits, [5, 1], 0) == 2  # 2.0 / 1.1 < 1.9
    assert Sampler(SamplingParams(temperature=0, repetition_penalty=1.1, penalty_last_n=1)).sample(
        logits, [1, 5], 0) == 1  # id 1 is outside the last-1 window
    assert Sampler(SamplingParams(temperature=0, repetition_penalty=1.1, penalty_last_n=0)).sample(
        logits, [1], 0) == 1


def test_sampled_token_is_the_inverse_cdf_of_the_philox_draw():
    logits = np.log(np.array([0.4, 0.3, 0.2, 0.1], dtype=np.float32))
    sampler = Sampler(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=99))
    for step in range(50):
        u = philox_uniform(99, step)
        expected = 0 if u < 0.4 else 1 if u < 0.7 else 2 if u < 0.9 else 3
        assert sampler.sample(logits, [], step) == expected


def test_sampling_frequencies_follow_the_tempered_softmax():
    logits = np.array([1.0, 0.0, -1.0, 2.0], dtype=np.float32)
    sampler = Sampler(SamplingParams(temperature=0.7, top_k=0, top_p=1.0, min_p=0.0, seed=2024))
    counts = np.bincount([sampler.sample(logits, [], step) for step in range(3000)], minlength=4)
    probs = np.exp(logits / 0.7) / np.exp(logits / 0.7).sum()
    assert np.all(np.abs(counts / 3000 - probs) < 0.03)


def test_filters_confine_the_draw():
    logits = np.array([3.0, 2.9, 2.8, 2.6, 2.7], dtype=np.float32)
    for params, allowed in (
        (dict(top_k=2, top_p=1.0, min_p=0.0), {0, 1}),
        (dict(top_k=0, top_p=0.45, min_p=0.0), {0, 1}),  # cumulative .242, .461
        (dict(top_k=0, top_p=1.0, min_p=0.85), {0, 1}),  # exp(-0.2) = .82 < .85 <= exp(-0.1)
        (dict(top_k=0, top_p=1.0, min_p=0.0, logit_bias={4: -100}), {0, 1, 2, 3}),
    ):
        sampler = Sampler(SamplingParams(temperature=1.0, seed=3, **params))
        assert {sampler.sample(logits, [], step) for step in range(200)} == allowed, params


def test_temperature_comes_after_top_p_as_in_llama_cpp():
    # untempered: p = [.6, .3, .1], so top-p .55 keeps token 0 alone; tempering first would keep two
    logits = np.log(np.array([0.6, 0.3, 0.1], dtype=np.float32))
    sampler = Sampler(SamplingParams(temperature=100.0, top_k=0, top_p=0.55, min_p=0.0, seed=5))
    assert {sampler.sample(logits, [], step) for step in range(100)} == {0}


def test_ignore_eos_bans_end_of_generation_ids():
    logits = np.array([0.0, 9.0, 1.0], dtype=np.float32)
    assert Sampler(SamplingParams(temperature=0, ignore_eos=True), eog_ids=[1]).sample(logits, [], 0) == 2
    assert Sampler(SamplingParams(temperature=0), eog_ids=[1]).sample(logits, [], 0) == 1


def test_same_seed_same_tokens_and_seed_recorded():
    logits = np.random.default_rng(0).normal(size=64).astype(np.float32)
    p = SamplingParams(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0)
    a, b = Sampler(p.model_copy(update={"seed": 11})), Sampler(p.model_copy(update={"seed": 11}))
    steps = list(range(40))
    random.Random(0).shuffle(steps)  # call order does not matter, only (seed, step)
    assert [a.sample(logits, [], s) for s in range(40)] == [b.sample(logits, [], s) for s in sorted(steps)]
    assert Sampler(p).seed is not None


def test_bad_logits_raise():
    s = Sampler(SamplingParams(temperature=1.0, seed=1))
    with pytest.raises(SamplingError, match="NaN"):
        s.sample(np.array([0.0, np.nan], dtype=np.float32), [], 0)
    with pytest.raises(SamplingError, match="no finite"):
        s.sample(np.array([-np.inf, -np.inf], dtype=np.float32), [], 0)
    with pytest.raises(SamplingError, match="logit_bias id 7"):
        Sampler(SamplingParams(logit_bias={7: 1.0})).sample(np.zeros(4, dtype=np.float32), [], 0)


def test_token_logprobs_are_the_raw_log_softmax():
    logits = np.log(np.array([0.125, 0.5, 0.125, 0.25], dtype=np.float32)) + 7.0
    lp = token_logprobs(logits, 2, 3)
    assert lp.token_id == 2 and lp.logprob == pytest.approx(np.log(0.125), abs=1e-6)
    assert [i for i, _ in lp.top] == [1, 3, 0]
    assert [v for _, v in lp.top] == pytest.approx(np.log([0.5, 0.25, 0.125]).tolist(), abs=1e-6)
    assert token_logprobs(logits, 1, 0).top == ()
