"""The runner's decode step on the CUDA engine (`pytest -m cuda`): tokens picked on the GPU.

A synthetic random-weight qwen2 (byte vocab, 512 ids). Greedy requests, penalties included, give the
same tokens through the device path (decoded ahead: `launch_decode`) as through the logits path; a
seeded sampled request gives the same tokens alone and inside a batch of 16 whose other rows take either
path; the engine's context is current on no thread after load, and another thread can close it.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytestmark = pytest.mark.cuda

N_TOKENS = 24


@pytest.fixture(scope="module")
def model(tiny_qwen_cuda):
    return tiny_qwen_cuda


class Spy:
    """The engine, counting its `decode_mixed` and `launch_decode` calls."""

    def __init__(self, engine) -> None:
        self.engine, self.mixed_calls, self.launches = engine, 0, 0

    def __getattr__(self, name: str):
        return getattr(self.engine, name)

    def decode_mixed(self, *args):
        self.mixed_calls += 1
        return self.engine.decode_mixed(*args)

    def launch_decode(self, *args):
        self.launches += 1
        return self.engine.launch_decode(*args)


class LogitsOnly:
    """The engine without `decode_mixed` or `launch_decode`: the runner samples every token on the host."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def __getattr__(self, name: str):
        if name in ("decode_mixed", "launch_decode"):
            raise AttributeError(name)
        return getattr(self.engine, name)


def _tokens(engine, tok, requests) -> dict[int, list[int]]:
    from gpu.runner import generate_batch

    got: dict[int, list[int]] = {}
    for index, result in generate_batch(engine, tok, requests):
        assert result.finish_reason in (None, "length"), result
        got.setdefault(index, []).append(result.token_id)
    return got


def _prompts(n: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, int(rng.integers(3, 40))).tolist() for _ in range(n)]


def test_greedy_device_path_equals_logits_path(model):
    from gpu.params import SamplingParams
    from gpu.runner import GenerationRequest

    engine, tok = model
    params = [SamplingParams(temperature=0.0, max_tokens=N_TOKENS, ignore_eos=True,
                             repetition_penalty=1.0 + 0.1 * (i % 3), frequency_penalty=0.2 * (i % 2))
              for i in range(16)]
    requests = [GenerationRequest(p, q) for p, q in zip(_prompts(16, 1), params, strict=True)]
    device = Spy(engine)
    want = _tokens(LogitsOnly(device), tok, requests)
    assert device.mixed_calls == device.launches == 0
    assert _tokens(device, tok, requests) == want
    assert device.launches == N_TOKENS - 1 and device.mixed_calls == 0  # decoded ahead, penalties too
    assert all(len(ids) == N_TOKENS for ids in want.values())


def test_seeded_request_same_alone_and_in_a_batch_of_16_via_the_runner(model):
    from gpu.params import SamplingParams
    from gpu.runner import GenerationRequest, generate

    engine, tok = model
    target = GenerationRequest(_prompts(1, 2)[0], SamplingParams(temperature=0.9, top_p=0.95, seed=1234,
                                                                 max_tokens=N_TOKENS, ignore_eos=True))
    kinds = [{"temperature": 1.0}, {"temperature": 0.0}, {"logprobs": 2}, {"logit_bias": {65: 3.0}},
             {"temperature": 0.7, "presence_penalty": 0.5}]
    others = [GenerationRequest(p, SamplingParams(seed=77 + i, max_tokens=8 + i, ignore_eos=True,
                                                  **kinds[i % len(kinds)]))
              for i, p in enumerate(_prompts(15, 3))]
    spy = Spy(engine)
    alone = [r.token_id for r in generate(spy, tok, target.prompt_ids, target.params)]
    assert len(alone) == N_TOKENS and len(set(alone)) > 4
    assert spy.launches == N_TOKENS - 1 and spy.mixed_calls == 0  # alone: each step queued ahead
    batched = _tokens(spy, tok, [*others[:7], target, *others[7:]])
    assert batched[7] == alone and spy.mixed_calls > 0  # host and penalised rows: steps that wait
    again = _tokens(engine, tok, [*others[7:], target])  # different batch-mates, other slots
    assert again[8] == alone


def test_context_is_current_on_no_thread_and_another_thread_closes_it(tmp_path):
    import pycuda.driver as cuda

    from gguf_loader.synthetic import BYTE_VOCAB, write_synthetic_model
    from gpu.cuda_engine import CudaEngine

    path = write_synthetic_model(tmp_path / "llama.gguf", n_layers=1, vocab=BYTE_VOCAB, vocab_size=512,
                                 context_length=256, seed=9, arch="llama", dim=128, n_heads=2, n_kv_heads=2,
                                 dtype="f16")
    before = cuda.Context.get_current()
    engine = CudaEngine.load(path, max_batch=2, max_context=64)
    assert cuda.Context.get_current() == before  # load left its context on no thread's stack
    slot = engine.alloc()
    engine.prefill([slot], [[1, 2, 3]])
    seen: list = []

    def close_here() -> None:
        try:
            engine.decode([slot], [4])
            engine.close()
            seen.append(cuda.Context.get_current())
        except Exception as exc:  # reported below
            seen.append(exc)

    thread = threading.Thread(target=close_here)
    thread.start()
    thread.join(60)
    assert seen == [None]  # closed there, and popped off that thread's stack
    assert cuda.Context.get_current() == before


def test_decode_mixed_bans_and_host_rows_match_decode(model):
    """Two copies of four sequences: `decode` gives the logits, `decode_mixed` with greedy rows under
    bans (a shared set over rows 0-2, runs of ids included) must pick the argmax of the banned logits,
    and return the host row's logits as `decode` does."""
    from gpu.params import SamplingParams

    engine, _ = model
    prompts = _prompts(4, 4)
    plain, mixed = [engine.alloc() for _ in prompts], [engine.alloc() for _ in prompts]
    try:
        engine.prefill(plain, prompts)
        engine.prefill(mixed, prompts)
        want = engine.decode(plain, [7, 8, 9, 10])  # [4, vocab]
        top = {int(np.argmax(want[i])) for i in range(3)}
        shared = tuple(sorted(top | {40, 41, 42, 43, 100}))
        banned = [shared, shared, shared, ()]
        greedy = SamplingParams(temperature=0.0, seed=1, penalty_last_n=0)
        ids, logits = engine.decode_mixed(mixed, [7, 8, 9, 10], [greedy, greedy, greedy, None], [0] * 4,
                                          [[], [], [], []], banned)
        expected = want[:3].copy()
        expected[:, list(shared)] = -np.inf
        assert ids.tolist() == [*np.argmax(expected, axis=1).tolist(), -1]
        assert all(int(ids[i]) not in top for i in range(3))
        np.testing.assert_allclose(logits[3], want[3], rtol=0, atol=1e-4)
    finally:
        for slot in plain + mixed:
            engine.free(slot)
