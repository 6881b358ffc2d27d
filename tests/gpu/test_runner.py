"""Runner loops over the engine API: one request, continuous batches, slot hygiene, batch invariance."""

from __future__ import annotations

import numpy as np
import pytest

from gpu.errors import ContextOverflow
from gpu.params import SamplingParams
from gpu.runner import GenerationRequest, Timings, encode_prompt, generate, generate_batch
from tests.gpu.generation_fakes import (
    BOS,
    EOS,
    SAMPLED,
    ByteTokenizer,
    DeviceSamplingEngine,
    FakeEngine,
    hashed_logits,
    prompts,
    scripted_logits,
)

TOK = ByteTokenizer()


def test_generate_follows_the_script_then_frees_the_slot():
    prompt = encode_prompt(TOK, "hi")
    engine = FakeEngine(scripted_logits(TOK.vocab_size, list(b"Paris!") + [EOS], len(prompt)))
    timings = Timings()
    results = list(generate(engine, TOK, prompt, SamplingParams(temperature=0), timings=timings))
    assert "".join(r.text for r in results) == "Paris!" and results[-1].finish_reason == "stop"
    assert [r.token_id for r in results] == list(b"Paris!") + [EOS]
    assert engine.tokens == {}  # slot given back
    assert engine.calls == [("prefill", [0])] + [("decode", [0])] * 6
    assert (timings.prompt_tokens, timings.completion_tokens, timings.decode_tokens) == (3, 7, 6)
    assert timings.ttft_s is not None and timings.prefill_tps > 0 and timings.decode_tps > 0


def test_closing_the_stream_early_frees_the_slot():
    engine = FakeEngine(hashed_logits(TOK.vocab_size))
    stream = generate(engine, TOK, [BOS, 5], SAMPLED)
    next(stream)
    assert list(engine.tokens) == [0]
    stream.close()
    assert engine.tokens == {}


def test_engine_errors_propagate_and_free_slots():
    model = hashed_logits(TOK.vocab_size)

    def failing(tokens: list[int]):
        if len(tokens) > 4:
            raise ContextOverflow("engine failure on the third decode")
        return model(tokens)

    engine = FakeEngine(failing)
    with pytest.raises(ContextOverflow, match="third decode"):
        list(generate(engine, TOK, [BOS, 1], SAMPLED.model_copy(update={"ignore_eos": True})))
    assert engine.tokens == {}


def test_context_limit_ends_with_length():
    engine = FakeEngine(hashed_logits(TOK.vocab_size), max_context=6)
    results = list(generate(engine, TOK, [BOS, 1, 2], SAMPLED.model_copy(update={"ignore_eos": True})))
    assert len(results) == 3 and results[-1].finish_reason == "length"


def _alone(request: GenerationRequest) -> list[int]:
    engine = FakeEngine(hashed_logits(TOK.vocab_size))
    return [r.token_id for r in generate(engine, TOK, request.prompt_ids, request.params)]


def test_batch_invariance_alone_vs_among_eight_others():
    target = GenerationRequest([BOS] + list(b"the same request"), SAMPLED)
    others = [GenerationRequest(p, SAMPLED.model_copy(update={"seed": 7 + i, "max_tokens": 3 + 2 * i}))
              for i, p in enumerate(prompts(8))]
    alone = _alone(target)
    assert len(alone) == SAMPLED.max_tokens or alone[-1] == EOS
    for position in (0, 4, 8):
        batch = others[:position] + [target] + others[position:]
        engine = FakeEngine(hashed_logits(TOK.vocab_size), max_batch=9)
        got: dict[int, list[int]] = {}
        for index, result in generate_batch(engine, TOK, batch):
            got.setdefault(index, []).append(result.token_id)
        assert got[position] == alone
        assert engine.tokens == {}
        assert max(len(slots) for _, slots in engine.calls) == 9  # really batched


def test_more_requests_than_slots_wait_for_a_free_one():
    requests = [GenerationRequest(p, SAMPLED.model_copy(update={"max_tokens": 2 + i % 3})) for i, p in
                enumerate(prompts(7))]
    engine = FakeEngine(hashed_logits(TOK.vocab_size), max_batch=3)
    timings = Timings()
    finished, tokens = {}, {}
    for index, result in generate_batch(engine, TOK, requests, timings=timings):
        tokens.setdefault(index, []).append(result.token_id)
        if result.finish_reason:
            finished[index] = result.finish_reason
    assert sorted(finished) == list(range(7))
    assert max(len(slots) for _, slots in engine.calls) == 3 and engine.tokens == {}
    assert timings.seeds == [1234] * 7
    assert timings.prompt_tokens == sum(len(r.prompt_ids) for r in requests)
    for i, request in enumerate(requests):  # and each equals its solo run
        assert finished[i] in ("length", "stop") and tokens[i] == _alone(request)


def test_a_bad_request_fails_alone():
    requests = [GenerationRequest([], SAMPLED), GenerationRequest([BOS, 1], SAMPLED)]
    results = list(generate_batch(FakeEngine(hashed_logits(TOK.vocab_size)), TOK, requests))
    assert results[0][0] == 0 and results[0][1].finish_reason == "error" and "empty" in results[0][1].error
    assert [i for i, _ in results[1:]] == [1] * (len(results) - 1) and results[-1][1].finish_reason


def test_cancel_between_steps():
    calls = {"n": 0}

    def cancelled() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    engine = FakeEngine(hashed_logits(TOK.vocab_size))
    request = GenerationRequest([BOS, 1], SAMPLED.model_copy(update={"ignore_eos": True}), cancelled)
    results = [r for _, r in generate_batch(engine, TOK, [request])]
    assert [r.finish_reason for r in results] == [None, None, None, "cancelled"]
    assert results[-1].token_id is None and engine.tokens == {}


def _run_batch(engine, requests) -> dict[int, list[tuple]]:
    got: dict[int, list[tuple]] = {}
    for index, r in generate_batch(engine, TOK, requests):
        got.setdefault(index, []).append((r.token_id, r.text, r.logprobs, r.finish_reason, r.error))
    return got


MIXED = [SAMPLED,  # device
         SAMPLED.model_copy(update={"temperature": 0.0, "repetition_penalty": 1.3}),  # device, greedy
         SAMPLED.model_copy(update={"seed": 5, "ignore_eos": True, "frequency_penalty": 0.5}),  # device, bans
         SAMPLED.model_copy(update={"seed": 6, "logprobs": 2}),  # host: logprobs
         SAMPLED.model_copy(update={"seed": 7, "logit_bias": {65: 4.0}})]  # host: logit bias


def test_device_sampled_rows_give_the_host_samplers_tokens():
    requests = [GenerationRequest(p, params) for p, params in zip(prompts(5), MIXED, strict=True)]
    want = _run_batch(FakeEngine(hashed_logits(TOK.vocab_size)), requests)
    engine = DeviceSamplingEngine(FakeEngine(hashed_logits(TOK.vocab_size)))
    assert _run_batch(engine, requests) == want
    assert engine.prefill_calls == [[False, False, False, True, True]]  # first tokens: the same split
    assert engine.mixed_calls[0] == [False, False, False, True, True]  # one call: 3 device rows, 2 host
    assert len(engine.mixed_calls) == max(len(want[i]) for i in range(3)) - 1  # while a device row runs
    assert all(c == "decode" for c, _ in engine.inner.calls[1:]) and engine.inner.tokens == {}
    assert sum(len(steps) for steps in want.values()) > 5 * 3  # really decoded a while


def test_device_sampled_request_is_the_same_alone_and_among_host_rows():
    target = GenerationRequest([BOS] + list(b"the same request"), SAMPLED)
    alone = _run_batch(DeviceSamplingEngine(FakeEngine(hashed_logits(TOK.vocab_size))), [target])[0]
    others = [GenerationRequest(p, MIXED[3 + i % 2]) for i, p in enumerate(prompts(6))]
    engine = DeviceSamplingEngine(FakeEngine(hashed_logits(TOK.vocab_size)))
    assert _run_batch(engine, others[:3] + [target] + others[3:])[3] == alone
    assert [host[3] for host in engine.mixed_calls] == [False] * len(engine.mixed_calls)


def test_batches_without_a_device_row_decode_logits_only():
    requests = [GenerationRequest(p, MIXED[3]) for p in prompts(3)]
    engine = DeviceSamplingEngine(FakeEngine(hashed_logits(TOK.vocab_size)))
    want = _run_batch(FakeEngine(hashed_logits(TOK.vocab_size)), requests)
    assert _run_batch(engine, requests) == want
    assert engine.mixed_calls == [] and ("decode", [0, 1, 2]) in engine.inner.calls
    assert engine.prefill_calls == []


def test_a_device_row_that_cannot_be_sampled_fails_alone():
    good = hashed_logits(TOK.vocab_size)

    def model(tokens: list[int]) -> np.ndarray:
        row = good(tokens)
        if tokens[1] == ord("x") and len(tokens) > 3:  # NaN from the second decode on
            row[7] = np.nan
        return row

    requests = [GenerationRequest([BOS, ord("x")], SAMPLED), GenerationRequest([BOS, ord("y")], SAMPLED)]
    want = _run_batch(FakeEngine(model), requests)
    got = _run_batch(DeviceSamplingEngine(FakeEngine(model)), requests)
    assert got[1] == want[1] and got[0][:-1] == want[0][:-1]
    assert got[0][-1] == (None, "", None, "error", "NaN/+inf logits or no finite logit to sample at step 2")
    assert want[0][-1][3] == "error" and len(got[0]) == 3


def test_encode_prompt_plain_and_chat():
    assert encode_prompt(TOK, "hi") == [BOS, 104, 105]
    chat = encode_prompt(TOK, "hi", chat=True, system="be brief")
    assert chat[0] == BOS and chat[1] != BOS  # template BOS + tokenizer BOS reduced to one
    assert TOK.decode(chat) == "<bos>system: be brief<eos><bos>user: hi<eos>assistant: "
    assert chat.count(EOS) == 2  # special tokens parsed


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A random-weight llama with a byte-level vocab (gguf_loader.synthetic), its numpy engine, tokenizer."""
    from gguf_loader.synthetic import write_synthetic_model
    from gpu.engine import load_engine
    from tokenizer import load_tokenizer

    path = write_synthetic_model(tmp_path_factory.mktemp("tiny") / "tiny-llama.gguf", "llama", vocab="bytes",
                                 dim=64, n_layers=2, n_heads=4, n_kv_heads=2, scale=0.5, seed=3)
    return load_engine(path, backend="numpy", max_batch=9, max_context=96), load_tokenizer(path)


def test_batch_invariance_on_the_numpy_engine(tiny_model):
    engine, tok = tiny_model
    sampled = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, max_tokens=16, seed=2024,
                             ignore_eos=True)
    target = GenerationRequest(tok.encode("the same seeded request"), sampled)
    others = [GenerationRequest(tok.encode(f"other prompt {i} " * (1 + i % 3)),
                                sampled.model_copy(update={"seed": 100 + i, "max_tokens": 5 + 3 * i}))
              for i in range(8)]
    alone = [r.token_id for r in generate(engine, tok, target.prompt_ids, target.params)]
    assert len(alone) == 16 and len(set(alone)) > 4  # really sampled, not a constant
    for position in (0, 8):
        batch = others[:position] + [target] + others[position:]
        got: dict[int, list[int]] = {}
        for index, result in generate_batch(engine, tok, batch):
            got.setdefault(index, []).append(result.token_id)
        assert got[position] == alone
    slots = [engine.alloc() for _ in range(engine.max_batch)]  # KVCacheFull if a slot leaked
    for slot in slots:
        engine.free(slot)


def test_greedy_generate_equals_argmax_loop_on_the_numpy_engine(tiny_model):
    engine, tok = tiny_model
    prompt = tok.encode("hello")
    params = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
    results = list(generate(engine, tok, prompt, params))
    slot = engine.alloc()
    logits, expected = engine.prefill([slot], [prompt]), []
    eog = [i for i in range(tok.vocab_size) if tok.is_eog(i)]
    for _ in range(10):
        logits[0, eog] = -np.inf  # ignore_eos bans them
        expected.append(int(np.argmax(logits[0])))
        logits = engine.decode([slot], [expected[-1]])
    engine.free(slot)
    assert [r.token_id for r in results] == expected
    assert "".join(r.text for r in results) == tok.decode(expected)
