"""Generation: per-sequence state over scripted logits and a byte-level tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

from gpu.errors import GenerationError
from gpu.generation import Generation
from gpu.params import SamplingParams
from tests.gpu.generation_fakes import BOS, EOS, ByteTokenizer

TOK = ByteTokenizer()
GREEDY = SamplingParams(temperature=0, max_tokens=32)


def one_hot(token_id: int, value: float = 10.0) -> np.ndarray:
    row = np.zeros(TOK.vocab_size, dtype=np.float32)  # [vocab]
    row[token_id] = value
    return row


def run_script(gen: Generation, script: list[int]) -> list:
    results = []
    for token_id in script:
        results.append(gen.step(one_hot(token_id)))
        if results[-1].finish_reason:
            break
    return results


def ids(text: str) -> list[int]:
    return list(text.encode())


def test_greedy_text_deltas_and_length():
    gen = Generation([BOS, 1, 2], GREEDY.model_copy(update={"max_tokens": 5}), TOK)
    results = run_script(gen, ids("Hello world"))
    assert [(r.token_id, r.text, r.finish_reason) for r in results] == [
        (72, "H", None), (101, "e", None), (108, "l", None), (108, "l", None), (111, "o", "length")]
    assert gen.output_ids == ids("Hello") and gen.text == "Hello" and gen.finish_reason == "length"


def test_stop_string_across_tokens_is_never_emitted():
    gen = Generation([BOS], GREEDY.model_copy(update={"stop": ["</s>"]}), TOK)
    script = ids("Hel") + [TOK.piece_id("lo</"), TOK.piece_id("s>!")] + ids("more")
    results = run_script(gen, script)
    assert [(r.text, r.finish_reason) for r in results] == [
        ("H", None), ("e", None), ("l", None), ("lo", None), ("", "stop")]
    assert gen.text == "Hello" and gen.output_ids == script[:5]


def test_held_prefix_released_when_it_does_not_complete():
    gen = Generation([BOS], GREEDY.model_copy(update={"stop": ["<end>"], "max_tokens": 4}), TOK)
    results = run_script(gen, ids("a<ex"))
    assert [(r.text, r.finish_reason) for r in results] == [
        ("a", None), ("", None), ("", None), ("<ex", "length")]


def test_held_text_is_flushed_at_length_and_at_eog():
    gen = Generation([BOS], GREEDY.model_copy(update={"stop": ["xyz"], "max_tokens": 2}), TOK)
    assert [(r.text, r.finish_reason) for r in run_script(gen, ids("ax"))] == [("a", None), ("x", "length")]
    gen = Generation([BOS], GREEDY.model_copy(update={"stop": ["xyz"]}), TOK)
    results = run_script(gen, ids("ax") + [EOS])
    assert [(r.token_id, r.text, r.finish_reason) for r in results] == [
        (97, "a", None), (120, "", None), (EOS, "x", "stop")]


def test_eog_stops_without_emitting_its_text():
    gen = Generation([BOS], GREEDY, TOK)
    results = run_script(gen, ids("ok") + [EOS] + ids("never"))
    assert [(r.token_id, r.text, r.finish_reason) for r in results][-1] == (EOS, "", "stop")
    assert gen.text == "ok" and gen.output_ids == ids("ok") + [EOS]


def test_ignore_eos_bans_the_eog_token():
    gen = Generation([BOS], GREEDY.model_copy(update={"ignore_eos": True, "max_tokens": 1}), TOK)
    row = one_hot(EOS)
    row[ord("z")] = 5.0
    assert gen.step(row).token_id == ord("z")


def test_stop_token_ids():
    gen = Generation([BOS], GREEDY.model_copy(update={"stop_token_ids": [ord("!")]}), TOK)
    results = run_script(gen, ids("hi!x"))
    assert [(r.text, r.finish_reason) for r in results] == [("h", None), ("i", None), ("", "stop")]


def test_split_utf8_is_held_until_complete():
    gen = Generation([BOS], GREEDY, TOK)
    e_acute = list("é".encode())  # [0xC3, 0xA9]
    results = run_script(gen, [e_acute[0], e_acute[1], TOK.piece_id("é")])
    assert [r.text for r in results] == ["", "é", "é"]


def test_context_limit():
    gen = Generation([BOS, 1, 2], GREEDY, TOK, max_context=6)
    results = run_script(gen, ids("abcdef"))
    assert [(r.text, r.finish_reason) for r in results] == [("a", None), ("b", None), ("c", "length")]
    with pytest.raises(GenerationError, match="prompt of 3 tokens leaves no room in a context of 3"):
        Generation([BOS, 1, 2], GREEDY, TOK, max_context=3)
    with pytest.raises(GenerationError, match="empty"):
        Generation([], GREEDY, TOK)
    with pytest.raises(GenerationError, match="logit_bias id 999"):
        Generation([BOS], SamplingParams(logit_bias={999: 1.0}), TOK)


def test_cancel_releases_held_text_and_ends():
    gen = Generation([BOS], GREEDY.model_copy(update={"stop": ["<end>"]}), TOK)
    run_script(gen, ids("a<"))
    result = gen.cancel()
    assert (result.token_id, result.text, result.finish_reason) == (None, "<", "cancelled")
    with pytest.raises(GenerationError, match="already finished"):
        gen.step(one_hot(1))


def test_nan_logits_end_with_error():
    gen = Generation([BOS], GREEDY, TOK)
    row = one_hot(1)
    row[3] = np.nan
    result = gen.step(row)
    assert (result.token_id, result.finish_reason) == (None, "error") and "NaN" in result.error


def test_logprobs_ride_along():
    gen = Generation([BOS], GREEDY.model_copy(update={"logprobs": 2}), TOK)
    result = gen.step(one_hot(ord("q")))
    assert result.logprobs.token_id == ord("q") and result.logprobs.top[0][0] == ord("q")
    assert len(result.logprobs.top) == 2 and result.logprobs.top[1][0] == 0  # ties: lowest id
    assert result.logprobs.logprob == pytest.approx(10 - np.log(np.exp(10) + TOK.vocab_size - 1), abs=1e-6)
    assert Generation([BOS], GREEDY, TOK).step(one_hot(3)).logprobs is None


def test_penalties_see_the_prompt_and_the_output():
    params = GREEDY.model_copy(update={"repetition_penalty": 2.0})
    row = one_hot(ord("a"), 4.0)
    row[ord("b")] = 3.0
    assert Generation([BOS, ord("c")], params, TOK).step(row).token_id == ord("a")
    assert Generation([BOS, ord("a")], params, TOK).step(row).token_id == ord("b")  # 4/2 < 3
    gen = Generation([BOS], params, TOK)
    assert [gen.step(row).token_id for _ in range(2)] == [ord("a"), ord("b")]


def test_seeded_sampling_is_reproducible_and_the_seed_recorded():
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, max_tokens=20, ignore_eos=True)
    rows = np.random.default_rng(1).normal(0, 2, (20, TOK.vocab_size)).astype(np.float32)  # [20, vocab]
    gen = Generation([BOS], params, TOK)
    assert gen.seed == gen.params.seed and gen.seed is not None
    first = [gen.step(r).token_id for r in rows]
    again = Generation([BOS], params.model_copy(update={"seed": gen.seed}), TOK)
    assert [again.step(r).token_id for r in rows] == first


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_path):
    from tokenizer import load_tokenizer

    return load_tokenizer(smollm2_path)


def test_real_tokenizer_stop_string_and_utf8(smollm2_tokenizer):
    tok = smollm2_tokenizer
    script = tok.encode(" Paris, café.\nThe end", add_special=False)
    params = SamplingParams(temperature=0, stop=[".\nThe"], max_tokens=50)
    gen = Generation(tok.encode("Capital?"), params, tok)
    for token_id in script:
        row = np.zeros(tok.vocab_size, dtype=np.float32)  # [vocab]
        row[token_id] = 10.0
        if gen.step(row).finish_reason:
            break
    assert gen.text == " Paris, café" and gen.finish_reason == "stop"
    assert gen.output_ids == script[: len(gen.output_ids)] and len(gen.output_ids) < len(script)


def test_real_tokenizer_eog_and_chat_prompt(smollm2_tokenizer):
    from gpu.runner import encode_prompt

    tok = smollm2_tokenizer
    ids = encode_prompt(tok, "hi", chat=True)
    assert tok.decode(ids) == tok.render_chat([{"role": "user", "content": "hi"}])
    assert ids.count(tok.encode("<|im_start|>", add_special=False, parse_special=True)[0]) == 3
    gen = Generation(ids, SamplingParams(temperature=0), tok)
    row = np.zeros(tok.vocab_size, dtype=np.float32)  # [vocab]
    row[tok.eos_id] = 10.0
    result = gen.step(row)
    assert tok.is_eog(tok.eos_id) and (result.text, result.finish_reason) == ("", "stop")


@pytest.mark.parametrize("update, script", [
    ({"stop": ["lo wo"]}, ids("Hello world")),  # stop string across tokens
    ({"max_tokens": 4}, ids("Hello world")),  # length
    ({"stop_token_ids": [ord("o")]}, ids("Hello world")),  # stop id
    ({}, [ord("a"), 0xC3, 0xA9, EOS, ord("b")]),  # split UTF-8, then end of generation
])
def test_accept_of_the_sampled_token_equals_step(update, script):
    params = GREEDY.model_copy(update=update)
    stepped, accepted = Generation([BOS, 1], params, TOK), Generation([BOS, 1], params, TOK)
    want = run_script(stepped, script)
    got = []
    for token_id in script:
        got.append(accepted.accept(token_id))
        if got[-1].finish_reason:
            break
    assert got == want
    assert (accepted.output_ids, accepted.history, accepted.text) == (
        stepped.output_ids, [BOS, 1] + stepped.output_ids, stepped.text)
    with pytest.raises(GenerationError, match="already finished"):
        accepted.accept(ord("x"))


def test_what_a_device_sampler_gets():
    plain = Generation([BOS, 1], SamplingParams(seed=None, penalty_last_n=3), TOK)
    assert plain.device_sampleable and plain.banned_ids == ()
    assert plain.device_params == plain.params and plain.device_params.seed == plain.seed
    plain.accept(ord("a"))
    assert (plain.n_generated, plain.history) == (1, [BOS, 1, ord("a")])
    no_eos = Generation([BOS], SamplingParams(seed=3, ignore_eos=True), TOK)
    assert no_eos.device_sampleable and no_eos.banned_ids == (EOS,)
    assert no_eos.device_params == no_eos.params.model_copy(update={"ignore_eos": False})
    for update in ({"logprobs": 1}, {"logit_bias": {5: 1.0}}):
        host = Generation([BOS], SamplingParams(**update), TOK)
        assert not host.device_sampleable and host.device_params is None
