"""Resource exhaustion on the real numpy engine (bench/exhaustion.py does the same through `orcd worker`):
over-budget jobs are refused at admission without taking a KV slot, a flood larger than the KV cache
waits and completes, and a KV cache that cannot exist is a clear OutOfMemory.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap

import pytest

from gguf_loader.synthetic import write_synthetic_model
from gpu.engine import load_engine
from gpu.generation import Generation
from gpu.params import SamplingParams
from tests.reliability.cluster import ROOT
from tokenizer import load_tokenizer
from worker.errors import ContextTooLong
from worker.scheduler import Request, Scheduler

MAX_CONTEXT, MAX_BATCH = 64, 2


class Sink:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.error: BaseException | None = None

    def started(self, now: float) -> None:
        self.events.append("started")

    def step(self, result, now: float) -> None:
        self.events.append("token")

    def finished(self, finish_reason: str, completion_tokens: int, now: float) -> None:
        self.events.append(f"finished:{finish_reason}:{completion_tokens}")

    def failed(self, exc: BaseException, now: float) -> None:
        self.events.append(f"failed:{type(exc).__name__}")
        self.error = exc


@pytest.fixture(scope="module")
def engine_and_tokenizer(tmp_path_factory):
    path = write_synthetic_model(tmp_path_factory.mktemp("exhaust") / "tiny.gguf", "llama", vocab="bytes",
                                 dim=32, n_layers=1, n_heads=2, context_length=512, seed=3)
    engine = load_engine(path, backend="numpy", max_batch=MAX_BATCH, max_context=MAX_CONTEXT)
    return engine, load_tokenizer(path)


def request(tokenizer, job_id: str, prompt_len: int, max_tokens: int) -> tuple[Request, Sink]:
    prompt_ids = tokenizer.encode("a", add_special=False) * prompt_len  # exactly prompt_len tokens
    params = SamplingParams(max_tokens=max_tokens, seed=1, ignore_eos=True)
    sink = Sink()
    new = functools.partial(Generation, prompt_ids, params, tokenizer, max_context=MAX_CONTEXT)
    return Request(job_id, prompt_ids, max_tokens, new, sink), sink


def drain(scheduler: Scheduler, turns: int = 500) -> None:
    for _ in range(turns):
        if not scheduler.run_once() and scheduler.n_waiting == 0:
            return
    raise AssertionError("the scheduler did not drain")


def test_over_budget_jobs_are_refused_at_admission_without_a_slot(engine_and_tokenizer):
    engine, tokenizer = engine_and_tokenizer
    scheduler = Scheduler(engine)
    over = [request(tokenizer, "one-over", 40, MAX_CONTEXT - 40 + 1), request(tokenizer, "huge", 1, 131072),
            request(tokenizer, "long-prompt", 10_000, 1)]
    good = [request(tokenizer, f"good-{i}", 8, 12) for i in range(3)]
    for r, _ in over[:2] + good + over[2:]:
        scheduler.submit(r)
    drain(scheduler)
    for r, sink in over:
        assert sink.events == ["failed:ContextTooLong"], r.job_id
        assert isinstance(sink.error, ContextTooLong) and r.job_id in str(sink.error)
        assert str(MAX_CONTEXT) in str(sink.error)
    for _, sink in good:
        assert sink.events == ["started"] + ["token"] * 12 + ["finished:length:12"]
    assert [engine.alloc() for _ in range(MAX_BATCH)] == list(range(MAX_BATCH))  # every slot came back
    for slot in range(MAX_BATCH):
        engine.free(slot)


def test_a_flood_larger_than_the_kv_cache_waits_and_completes(engine_and_tokenizer):
    engine, tokenizer = engine_and_tokenizer
    scheduler = Scheduler(engine)
    flood = [request(tokenizer, f"flood-{i}", 4, 6) for i in range(12 * MAX_BATCH)]
    for r, _ in flood:
        scheduler.submit(r)
    drain(scheduler)
    assert all(sink.events[-1] == "finished:length:6" for _, sink in flood)
    assert [engine.alloc() for _ in range(MAX_BATCH)] == list(range(MAX_BATCH))
    for slot in range(MAX_BATCH):
        engine.free(slot)


def test_a_kv_cache_that_cannot_exist_is_a_clear_out_of_memory(tmp_path):
    path = write_synthetic_model(tmp_path / "long.gguf", "llama", vocab="bytes", dim=64, n_layers=2,
                                 n_heads=4, context_length=1 << 27, seed=1)
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # keep the host safe whatever happens
        from gpu.engine import load_engine
        from gpu.errors import OutOfMemory
        try:
            load_engine({str(path)!r}, backend="numpy", max_batch=1024, max_context=1 << 27)
        except OutOfMemory as exc:
            print("OutOfMemory:", exc)
            sys.exit(0)
        except BaseException as exc:
            print(type(exc).__name__, exc)
            sys.exit(1)
        sys.exit(2)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-500:]
    assert "slots" in proc.stdout
