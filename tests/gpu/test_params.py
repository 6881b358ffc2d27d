"""SamplingParams: defaults, bounds (every error names its field), JSON round trips, seed resolution."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gpu.params import RANDOM_SEED_BITS, SamplingParams


def test_defaults_are_llama_cpp_s():
    p = SamplingParams()
    assert (p.temperature, p.top_k, p.top_p, p.min_p) == (0.8, 40, 0.95, 0.05)
    penalties = (p.repetition_penalty, p.presence_penalty, p.frequency_penalty, p.penalty_last_n)
    assert penalties == (1.0, 0.0, 0.0, 64)
    assert (p.logit_bias, p.stop, p.stop_token_ids) == ({}, [], [])
    assert (p.max_tokens, p.seed, p.logprobs, p.ignore_eos) == (256, None, 0, False)
    assert not p.greedy and SamplingParams(temperature=0).greedy


def test_edge_values_are_accepted():
    p = SamplingParams(temperature=0, top_k=0, top_p=1.0, min_p=0.0, presence_penalty=-2, frequency_penalty=2,
                       logit_bias={0: -100, 5: 100}, stop=["x" * 256] * 16, max_tokens=1, seed=2**64 - 1,
                       logprobs=20, penalty_last_n=-1)
    assert p.seed == 2**64 - 1 and len(p.stop) == 16 and p.logit_bias == {0: -100.0, 5: 100.0}


BAD = [
    ("temperature", -0.1), ("temperature", math.nan), ("temperature", math.inf), ("temperature", True),
    ("top_k", -1), ("top_k", 2.5), ("top_k", True),
    ("top_p", 0.0), ("top_p", 1.01), ("top_p", math.nan),
    ("min_p", 1.0), ("min_p", -0.01), ("min_p", -math.inf),
    ("repetition_penalty", 0.0), ("repetition_penalty", math.inf),
    ("presence_penalty", 2.01), ("presence_penalty", math.nan), ("frequency_penalty", -2.5),
    ("penalty_last_n", -2),
    ("logit_bias", {3: 100.5}), ("logit_bias", {-1: 1.0}), ("logit_bias", {3: math.nan}),
    ("logit_bias", {i: 1.0 for i in range(1025)}),
    ("stop", [""]), ("stop", ["x" * 257]), ("stop", ["a"] * 17), ("stop", "abc"),
    ("stop_token_ids", [-1]), ("stop_token_ids", list(range(65))),
    ("max_tokens", 0), ("max_tokens", 131073), ("max_tokens", None),
    ("seed", -1), ("seed", 2**64), ("seed", 1.5),
    ("logprobs", -1), ("logprobs", 21),
    ("ignore_eos", "maybe"),
    ("temprature", 0.5),
]


@pytest.mark.parametrize(("field", "value"), BAD, ids=[f"{f}={v!r}"[:40] for f, v in BAD])
def test_invalid_values_name_their_field(field, value):
    with pytest.raises(ValidationError) as info:
        SamplingParams(**{field: value})
    assert [e["loc"][0] for e in info.value.errors()] == [field]


def test_frozen():
    p = SamplingParams()
    with pytest.raises(ValidationError):
        p.top_k = 3


def test_resolve_seed_keeps_a_given_seed_and_records_a_random_one():
    p = SamplingParams(seed=7)
    assert p.resolve_seed() is p
    q = SamplingParams().resolve_seed()
    assert isinstance(q.seed, int) and 0 <= q.seed < 2**RANDOM_SEED_BITS
    assert q.resolve_seed() is q and q.model_copy(update={"seed": None}) == SamplingParams()


params_strategy = st.builds(
    SamplingParams,
    temperature=st.floats(0, 100), top_k=st.integers(0, 1000), top_p=st.floats(0.001, 1.0),
    min_p=st.floats(0, 0.999), repetition_penalty=st.floats(0.01, 10),
    presence_penalty=st.floats(-2, 2), frequency_penalty=st.floats(-2, 2),
    logit_bias=st.dictionaries(st.integers(0, 2**31 - 1), st.floats(-100, 100), max_size=5),
    stop=st.lists(st.text(min_size=1, max_size=20), max_size=16),
    stop_token_ids=st.lists(st.integers(0, 2**31 - 1), max_size=8),
    max_tokens=st.integers(1, 131072), seed=st.none() | st.integers(0, 2**64 - 1),
    logprobs=st.integers(0, 20), ignore_eos=st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(params_strategy)
def test_json_round_trip(p):
    assert SamplingParams.model_validate_json(p.model_dump_json()) == p
    assert SamplingParams.model_validate(p.model_dump()) == p
