"""DecodeAhead: the next decode step queued before a step's tokens are read gives the same tokens as the
plain loop, runs ahead where it may, and falls back to waiting steps where it may not."""

from __future__ import annotations

import pytest

from gpu.decode_ahead import DecodeAhead, feedable
from gpu.errors import EngineError
from gpu.generation import Generation
from gpu.runner import GenerationRequest, generate_batch
from tests.gpu.generation_fakes import (
    BOS,
    EOS,
    SAMPLED,
    AheadEngine,
    ByteTokenizer,
    DeviceSamplingEngine,
    FakeEngine,
    hashed_logits,
    prompts,
    scripted_logits,
)

TOK = ByteTokenizer()
FEEDABLE = [SAMPLED,
            SAMPLED.model_copy(update={"temperature": 0.0, "max_tokens": 5}),  # greedy, short
            SAMPLED.model_copy(update={"seed": 5, "ignore_eos": True, "max_tokens": 17}),  # bans EOS
            SAMPLED.model_copy(update={"seed": 6, "stop": ["e"], "max_tokens": 30}),  # a stop string
            SAMPLED.model_copy(update={"seed": 7, "top_k": 0, "max_tokens": 9}),
            SAMPLED.model_copy(update={"seed": 8, "repetition_penalty": 1.3, "frequency_penalty": 0.4,
                                       "max_tokens": 14})]  # penalties: the fed token joins the window


def run(engine, requests) -> dict[int, list[tuple]]:
    got: dict[int, list[tuple]] = {}
    for index, r in generate_batch(engine, TOK, requests):
        got.setdefault(index, []).append((r.token_id, r.text, r.finish_reason, r.error))
    return got


def launched_before_read(events) -> int:
    """How many launches were queued while an earlier launch's ids were still unread."""
    unread, ahead = set(), 0
    for kind, what in events:
        if kind == "launch":
            ahead += bool(unread)
            unread.add(len([e for e in events[: events.index((kind, what))] if e[0] == "launch"]))
        else:
            unread.discard(what)
    return ahead


def test_tokens_equal_the_plain_loop_with_more_requests_than_slots():
    requests = [GenerationRequest(p, FEEDABLE[i % len(FEEDABLE)]) for i, p in enumerate(prompts(9))]
    want = run(FakeEngine(hashed_logits(TOK.vocab_size), max_batch=3), requests)
    engine = AheadEngine(FakeEngine(hashed_logits(TOK.vocab_size), max_batch=3))
    assert run(engine, requests) == want
    assert engine.inner.tokens == {}  # every slot freed, the ones a discarded step wrote to as well
    assert launched_before_read(engine.events) >= 20  # it really ran ahead
    assert sum(len(steps) for steps in want.values()) > 9 * 4


def test_each_step_is_queued_before_the_last_ones_tokens_are_read():
    engine = AheadEngine(FakeEngine(hashed_logits(TOK.vocab_size)))
    params = SAMPLED.model_copy(update={"ignore_eos": True, "max_tokens": 6})
    got = run(engine, [GenerationRequest([BOS, 1, 2], params)])
    assert [s[2] for s in got[0]] == [None] * 5 + ["length"]
    # first token from prefill; decodes 1..5: launch 0, then each launch before the previous read; the
    # step that would pass max_tokens is never launched
    assert engine.events == [("launch", [0]), ("launch", [0]), ("read", 0), ("launch", [0]), ("read", 1),
                             ("launch", [0]), ("read", 2), ("launch", [0]), ("read", 3), ("read", 4)]


def test_a_stop_token_seen_late_discards_one_step_and_frees_the_slot():
    script = [65, 66, EOS, 67, 68]
    engine = AheadEngine(FakeEngine(scripted_logits(TOK.vocab_size, script, prompt_len=2)))
    got = run(engine, [GenerationRequest([BOS, 1], SAMPLED.model_copy(update={"temperature": 0.0}))])
    assert [s[0] for s in got[0]] == [65, 66, EOS] and got[0][-1][2] == "stop"
    assert [kind for kind, _ in engine.events].count("launch") == 3  # fed 65, 66 and the discarded EOS
    assert engine.inner.tokens == {}


def test_the_context_limit_ends_with_length_without_passing_it():
    engine = AheadEngine(FakeEngine(hashed_logits(TOK.vocab_size), max_context=10))
    params = SAMPLED.model_copy(update={"ignore_eos": True, "max_tokens": 50})
    got = run(engine, [GenerationRequest([BOS, 1, 2, 3], params)])
    assert len(got[0]) == 6 and got[0][-1][2] == "length"


@pytest.mark.parametrize("other", [SAMPLED.model_copy(update={"logprobs": 2}),  # sampled on the host
                                   SAMPLED.model_copy(update={"logit_bias": {65: 2.0}})])
def test_a_row_that_cannot_be_fed_makes_steps_wait(other):
    requests = [GenerationRequest(prompts(2)[0], SAMPLED), GenerationRequest(prompts(2)[1], other)]
    want = run(FakeEngine(hashed_logits(TOK.vocab_size)), requests)
    engine = AheadEngine(FakeEngine(hashed_logits(TOK.vocab_size)))
    assert run(engine, requests) == want
    together = min(len(want[0]), len(want[1])) - 1  # decode steps with both rows running
    assert launched_before_read(engine.events) <= len(want[0]) - together


def test_switched_off_or_without_launch_decode_every_step_waits(monkeypatch):
    monkeypatch.setenv("ORCD_DECODE_AHEAD", "0")
    engine = AheadEngine(FakeEngine(hashed_logits(TOK.vocab_size)))
    requests = [GenerationRequest(p, SAMPLED) for p in prompts(3)]
    assert run(engine, requests) == run(DeviceSamplingEngine(FakeEngine(hashed_logits(TOK.vocab_size))),
                                        requests)
    assert engine.events == [] and engine.mixed_calls
    assert DecodeAhead(FakeEngine(hashed_logits(TOK.vocab_size)), enabled=True).launch is None


def test_an_engine_error_drops_the_queued_step():
    engine = AheadEngine(FakeEngine(hashed_logits(TOK.vocab_size)))
    slot = engine.alloc()
    engine.prefill([slot], [[BOS, 1]])
    generation = Generation([BOS, 1], SAMPLED, TOK)
    generation.accept(70)
    ahead = DecodeAhead(engine, enabled=True)
    (index, token), = ahead.rows([slot], [70], [generation])  # launches 2 steps, reads the first
    assert index == 0 and isinstance(token, int) and ahead._queued is not None
    ahead.launch = lambda *a, **k: (_ for _ in ()).throw(EngineError("decode of slots [0]: boom"))
    generation.accept(token)
    with pytest.raises(EngineError, match="boom"):
        ahead.rows([slot], [token], [generation])
    assert ahead._queued is None


def test_feedable():
    assert feedable(Generation([BOS], SAMPLED, TOK))
    assert feedable(Generation([BOS], SAMPLED.model_copy(update={"presence_penalty": 0.5}), TOK))
    assert not feedable(Generation([BOS], SAMPLED.model_copy(update={"logit_bias": {3: 1.0}}), TOK))
    assert not feedable(object())
