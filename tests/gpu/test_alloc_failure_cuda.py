"""A real device allocation failure in the middle of a request (`pytest -m cuda`): it fails that request
only, with an `OutOfMemory` that names the allocation, and the engine and the scheduler serve on.

Every buffer a prefill or decode step uses is allocated at load or by the first steps (the gemm's split-K
scratch, the sampler's workspace: docs/reliability.md §8), so the one device allocation a request on a
warm engine can still trigger is `CudaForward._logits_all` ([512, vocab] f32), made on the first all-positions
prefill (`prefill_all_logits`: teacher forcing, prompt logprobs). The tests hold nearly all free device
memory in PyCUDA allocations (`device_full`, leaving less than that buffer), run such a prefill, release
the memory, and check what happens next. The model is a synthetic qwen2 with a byte vocab of 16384 ids,
so the lazy buffer is 32 MiB.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator

import numpy as np
import pytest

pytestmark = pytest.mark.cuda

VOCAB = 16384
MIB = 1 << 20
PROMPTS = {name: np.random.default_rng(seed).integers(0, 256, 24).tolist()  # one length: warm kernels
           for seed, name in enumerate("abc")}
N_TOKENS = 16


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from gguf_loader.synthetic import BYTE_VOCAB, write_synthetic_model

    return write_synthetic_model(tmp_path_factory.mktemp("alloc-failure") / "qwen2.gguf", arch="qwen2",
                                 n_layers=2, dim=256, n_heads=4, n_kv_heads=2, dtype="f16", vocab=BYTE_VOCAB,
                                 vocab_size=VOCAB, context_length=1024, seed=11)


@pytest.fixture
def engine(model_path):
    """A fresh engine per test: its lazy all-logits buffer not yet allocated."""
    from gpu.cuda_engine import CudaEngine

    engine = CudaEngine.load(model_path, max_batch=4, max_context=256)
    yield engine
    engine.close()


@contextlib.contextmanager
def device_full(engine, keep: int = 4 * MIB) -> Iterator[int]:
    """Hold all free device memory but about `keep` bytes (PyCUDA allocations in the engine's context)
    for the block; yields the bytes left free."""
    import pycuda.driver as cuda

    held = []
    with engine.rt.activate():
        size = max(cuda.mem_get_info()[0] - 64 * MIB, MIB)
        while size >= MIB:  # the largest block that fits, again and again, halving on failure
            try:
                held.append(cuda.mem_alloc(size))
            except cuda.MemoryError:
                size //= 2
        while held and cuda.mem_get_info()[0] < keep:  # the last (smallest) blocks back
            held.pop().free()
        left = cuda.mem_get_info()[0]
    try:
        yield left
    finally:
        with engine.rt.activate():
            for block in held:
                block.free()


def greedy_params():
    from gpu.params import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=N_TOKENS, ignore_eos=True, seed=0)


def reference(engine, tokenizer, prompt: list[int]) -> list[int]:
    """The greedy tokens of `prompt` through `gpu.runner.generate` (the scheduler's decode step)."""
    from gpu.runner import generate

    results = list(generate(engine, tokenizer, prompt, greedy_params()))
    assert results[-1].finish_reason == "length", results[-1]
    return [r.token_id for r in results]


def continue_greedy(engine, tokenizer, slot: int, prompt: list[int], first: int) -> list[int]:
    """The greedy tokens of a prompt already prefilled in `slot`, its first token given, decoded on
    through the runner's step (`decode_rows` + `advance`) as `reference` does."""
    from gpu.generation import Generation
    from gpu.runner import advance, decode_rows

    generation = Generation(prompt, greedy_params(), tokenizer, max_context=engine.max_context)
    result = generation.accept(first)
    while result.finish_reason is None:
        (row,) = decode_rows(engine, [slot], [result.token_id], [generation])
        result = advance(generation, row)
    assert result.finish_reason == "length", result
    return generation.output_ids


def logits_buffer_bytes(engine) -> int:
    return engine.forward.rows * VOCAB * 4


MESSAGE = re.compile(r"logits: cannot allocate \[512, 16384\] float32 \(32\.00 MiB\): "
                     r"[\d.]+ (B|KiB|MiB) free of [\d.]+ GiB on .+, [\d.]+ MiB held by this engine")


def test_runtime_names_the_allocation_that_failed(engine):
    from gpu.errors import OutOfMemory

    with engine.rt.activate():
        _, total = engine.rt.mem_info()
        before = dict(engine.rt.allocated)
        with pytest.raises(OutOfMemory) as info:
            engine.rt.empty((total // 4 + 1,), np.float32, "probe")
    assert re.fullmatch(rf"probe: cannot allocate \[{total // 4 + 1}\] float32 \([\d.]+ GiB\): "
                        r"[\d.]+ GiB free of [\d.]+ GiB on .+, [\d.]+ MiB held by this engine",
                        str(info.value)), str(info.value)
    assert dict(engine.rt.allocated) == before  # nothing counted for the failed allocation


def test_engine_allocation_failure_fails_the_call_and_the_engine_serves_on(engine, model_path):
    from gpu.errors import OutOfMemory
    from tokenizer import load_tokenizer

    tokenizer = load_tokenizer(model_path)
    prompt = PROMPTS["a"]
    want = reference(engine, tokenizer, prompt)  # also loads every kernel a 24-token prefill runs
    assert len(want) == N_TOKENS
    allocated, in_use = dict(engine.rt.allocated), engine.slots.in_use()
    slot = engine.alloc()
    with device_full(engine) as left:
        assert left < logits_buffer_bytes(engine), f"the filler left {left} bytes free"
        with pytest.raises(OutOfMemory) as info:
            engine.prefill_all_logits(slot, prompt)
    print(f"filler left {left} bytes free; the error: {info.value}")  # shown with -s (docs/reliability.md)
    assert MESSAGE.fullmatch(str(info.value)), str(info.value)
    assert engine.seq_len(slot) == 0  # the failed step left the sequence as it was
    assert dict(engine.rt.allocated) == allocated
    engine.free(slot)
    assert engine.slots.in_use() == in_use

    # the memory back: the same call succeeds on the same slot, and decoding on from it gives the
    # tokens of the run before the failure
    slot = engine.alloc()
    every = engine.prefill_all_logits(slot, prompt)  # [24, vocab]
    assert every.shape == (len(prompt), VOCAB) and np.isfinite(every).all()
    assert engine.rt.allocated["logits"] == allocated["logits"] + logits_buffer_bytes(engine)
    assert continue_greedy(engine, tokenizer, slot, prompt, want[0]) == want
    engine.free(slot)
    assert reference(engine, tokenizer, prompt) == want
    assert engine.slots.in_use() == in_use


class AllLogitsFor:
    """The engine, but the prompts in `prompts` are prefilled at every position (`prefill_all_logits`,
    as a prompt-logprobs job would be) and give their last row: the request path that allocates."""

    prefill_mixed = None  # every first token from `prefill` below (sampled on the host)

    def __init__(self, engine, prompts: list[list[int]]) -> None:
        self.engine, self.prompts = engine, {tuple(p) for p in prompts}

    def __getattr__(self, name: str):
        return getattr(self.engine, name)

    def prefill(self, slots: list[int], prompts: list[list[int]]) -> np.ndarray:
        rows = [self.engine.prefill_all_logits(slot, p)[-1] if tuple(p) in self.prompts
                else self.engine.prefill([slot], [p])[0] for slot, p in zip(slots, prompts, strict=True)]
        return np.stack(rows)  # [B, vocab]


class Sink:
    """A job's sink: its tokens, its end (finish reason or exception) and an event set at the end."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.began = False
        self.finish: str | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def started(self, now: float) -> None:
        self.began = True

    def step(self, result, now: float) -> None:
        if result.token_id is not None:
            self.tokens.append(result.token_id)

    def finished(self, finish_reason: str, completion_tokens: int, now: float) -> None:
        self.finish = finish_reason
        self.done.set()

    def failed(self, exc: BaseException, now: float) -> None:
        self.error = exc
        self.done.set()


def job(name: str, tokenizer, engine, sink: Sink):
    """A scheduler request for PROMPTS[name] with a real `Generation`, as worker.service builds it."""
    from gpu.generation import Generation
    from worker.scheduler import Request

    prompt = PROMPTS[name]
    return Request(job_id=name, prompt_ids=prompt, max_tokens=N_TOKENS, sink=sink,
                   new_generation=lambda: Generation(prompt, greedy_params(), tokenizer,
                                                     max_context=engine.max_context))


def test_scheduler_fails_only_the_job_whose_allocation_failed(engine, model_path):
    from gpu.errors import OutOfMemory
    from tokenizer import load_tokenizer
    from worker.scheduler import Scheduler

    tokenizer = load_tokenizer(model_path)
    want = {name: reference(engine, tokenizer, PROMPTS[name]) for name in "ac"}  # kernels and graph warm
    scheduler = Scheduler(AllLogitsFor(engine, [PROMPTS["b"]]))
    sinks = {name: Sink() for name in "abc"}

    # job a runs; with the device full, job b's prefill needs the 32 MiB buffer and fails, a decodes on
    scheduler.submit(job("a", tokenizer, engine, sinks["a"]))
    for _ in range(3):
        assert scheduler.run_once()
    assert len(sinks["a"].tokens) == 4  # 1 from the prefill, then 1 per turn
    with device_full(engine) as left:
        assert left < logits_buffer_bytes(engine), f"the filler left {left} bytes free"
        scheduler.submit(job("b", tokenizer, engine, sinks["b"]))
        assert scheduler.run_once()
        assert sinks["b"].done.is_set() and scheduler.n_running == 1
        turns = 0
        while not sinks["a"].done.is_set() and turns < N_TOKENS:  # a ends with the device still full
            scheduler.run_once()
            turns += 1
        assert turns == N_TOKENS - 5
    assert isinstance(sinks["b"].error, OutOfMemory) and sinks["b"].began and sinks["b"].tokens == []
    assert MESSAGE.fullmatch(str(sinks["b"].error)), str(sinks["b"].error)
    assert (sinks["a"].finish, sinks["a"].error, sinks["a"].tokens) == ("length", None, want["a"])
    assert engine.slots.in_use() == 0  # b's slot was freed at its failure, a's at its end

    # the scheduler's thread serves a third job on the same engine
    scheduler.start()
    try:
        scheduler.submit(job("c", tokenizer, engine, sinks["c"]))
        assert sinks["c"].done.wait(30), "job c did not end within 30 s"
    finally:
        scheduler.stop()
    assert (sinks["c"].finish, sinks["c"].error, sinks["c"].tokens) == ("length", None, want["c"])
    assert engine.slots.in_use() == 0
