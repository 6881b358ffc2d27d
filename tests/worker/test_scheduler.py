"""Continuous batching over a fake engine: admission, priorities, limits, cancel, deadlines, failures."""

from __future__ import annotations

import logging
import threading

import pytest

from tests.worker.fakes import FakeEngine, FakeGeneration, RecordingSink
from worker.errors import SchedulerClosed
from worker.scheduler import Request, Scheduler


def request(job_id: str, prompt: list[int], max_tokens: int, sink: RecordingSink, **kw) -> Request:
    return Request(job_id=job_id, prompt_ids=prompt, max_tokens=max_tokens, sink=sink,
                   new_generation=lambda: FakeGeneration(max_tokens), **kw)


def drain(scheduler: Scheduler, turns: int = 100) -> None:
    for _ in range(turns):
        if not scheduler.run_once() and not scheduler.n_waiting:
            return
    raise AssertionError("scheduler still busy")


def test_batches_up_to_max_batch_and_admits_when_a_slot_frees():
    engine = FakeEngine(max_batch=2)
    scheduler = Scheduler(engine)
    sinks = {name: RecordingSink() for name in "abc"}
    scheduler.submit(request("a", [1, 2], 2, sinks["a"]))
    scheduler.submit(request("b", [3], 4, sinks["b"]))
    scheduler.submit(request("c", [5, 5, 5], 1, sinks["c"]))
    drain(scheduler)
    # turn 1: a, b prefilled together and decoded; a ends after 2 tokens; turn 2: c takes a's slot
    assert engine.calls == [("prefill", [0, 1]), ("decode", [0, 1]), ("prefill", [0]), ("decode", [1]),
                            ("decode", [1])]
    # the first token comes from the prompt's logits: (len + first id) % 16
    assert sinks["a"].log == [("started",), ("step", 3, "d"), ("step", 4, "e"), ("finished", "length", 2)]
    assert sinks["b"].tokens == [4, 5, 6, 7]
    assert sinks["c"].log == [("started",), ("step", 8, "i"), ("finished", "length", 1)]
    assert sorted(engine.free_slots) == [0, 1]


def test_higher_priority_first_then_oldest():
    engine = FakeEngine(max_batch=1)
    scheduler = Scheduler(engine)
    order: list[str] = []

    class Sink(RecordingSink):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def started(self, now: float) -> None:
            order.append(self.name)

    for name, priority in (("low", 1), ("mid1", 5), ("high", 9), ("mid2", 5)):
        scheduler.submit(request(name, [1], 1, Sink(name), priority=priority))
    drain(scheduler)
    assert order == ["high", "mid1", "mid2", "low"]


def test_prompt_plus_max_tokens_over_context_is_refused_at_admission():
    engine = FakeEngine(max_batch=2, max_context=10)
    scheduler = Scheduler(engine)
    long, ok = RecordingSink(), RecordingSink()
    scheduler.submit(request("long", [1] * 6, 5, long))
    scheduler.submit(request("ok", [1] * 6, 4, ok))
    drain(scheduler)
    assert long.log == [("failed", "ContextTooLong", "job long: prompt (6 tokens) + max_tokens (5) = 11 "
                         "exceeds the worker's max context (10)")]
    assert ok.log[-1] == ("finished", "length", 4)


def test_empty_prompt_fails_alone():
    scheduler = Scheduler(FakeEngine())
    sink = RecordingSink()
    scheduler.submit(request("e", [], 3, sink))
    drain(scheduler)
    assert sink.log == [("failed", "InvalidJob", "job e: the prompt has no tokens")]


def test_cancel_running_stops_within_one_step_and_frees_the_slot():
    engine = FakeEngine(max_batch=2)
    cancelled: set[str] = set()
    scheduler = Scheduler(engine, cancelled=lambda ids: cancelled & set(ids))
    sink, other = RecordingSink(), RecordingSink()
    scheduler.submit(request("x", [0], 20, sink))
    scheduler.submit(request("y", [0], 5, other))
    scheduler.run_once()  # prefill (token 1) + one decode (token 2)
    cancelled.add("x")
    scheduler.run_once()
    assert sink.log == [("started",), ("step", 1, "b"), ("step", 2, "c"), ("step", None, "~"),
                        ("finished", "cancelled", 2)]
    assert engine.calls[-1] == ("decode", [1])  # y alone
    assert 0 in engine.free_slots
    drain(scheduler)
    assert other.log[-1] == ("finished", "length", 5)


def test_cancel_while_waiting_never_starts():
    engine = FakeEngine(max_batch=1)
    cancelled = {"queued"}
    scheduler = Scheduler(engine, cancelled=lambda ids: cancelled & set(ids))
    running, queued = RecordingSink(), RecordingSink()
    scheduler.submit(request("run", [0], 3, running))
    scheduler.submit(request("queued", [0], 3, queued))
    drain(scheduler)
    assert queued.log == [("finished", "cancelled", 0)]
    assert [c for c in engine.calls if c[0] == "prefill"] == [("prefill", [0])]


def test_deadline_fails_running_and_waiting_jobs():
    clock = [100.0]
    engine = FakeEngine(max_batch=1)
    scheduler = Scheduler(engine, clock=lambda: clock[0])
    a, b = RecordingSink(), RecordingSink()
    scheduler.submit(request("a", [0], 20, a, deadline=101.0))
    scheduler.submit(request("b", [0], 20, b, deadline=101.0))
    scheduler.run_once()
    clock[0] = 101.0
    scheduler.run_once()
    assert a.log[-1] == ("failed", "DeadlineExceeded", "job a: deadline passed after 2 tokens")
    assert b.log == [("failed", "DeadlineExceeded", "job b: deadline passed while waiting for a batch slot")]
    assert engine.free_slots == [0]


def test_engine_error_fails_that_batch_and_the_loop_keeps_serving():
    engine = FakeEngine(max_batch=2)
    scheduler = Scheduler(engine)
    a, b, later = RecordingSink(), RecordingSink(), RecordingSink()
    scheduler.submit(request("a", [0], 5, a))
    scheduler.submit(request("b", [1], 5, b))
    engine.fail_decode = 1
    scheduler.run_once()
    assert a.log[-1] == ("failed", "RuntimeError", "device lost")
    assert b.log[-1] == ("failed", "RuntimeError", "device lost")
    assert sorted(engine.free_slots) == [0, 1]
    scheduler.submit(request("later", [2], 3, later))
    drain(scheduler)
    assert later.log == [("started",), ("step", 3, "d"), ("step", 4, "e"), ("step", 5, "f"),
                         ("finished", "length", 3)]


def test_generation_factory_error_fails_that_job_and_frees_its_slot():
    engine = FakeEngine(max_batch=2)
    scheduler = Scheduler(engine)
    bad = RecordingSink()

    def boom():
        raise ValueError("logit_bias id 99 >= vocab_size 16")

    scheduler.submit(Request(job_id="bad", prompt_ids=[1], max_tokens=2, sink=bad, new_generation=boom))
    drain(scheduler)
    assert bad.log == [("failed", "ValueError", "logit_bias id 99 >= vocab_size 16")]
    assert sorted(engine.free_slots) == [0, 1]


def test_stop_token_ends_a_job_early():
    scheduler = Scheduler(FakeEngine())
    sink = RecordingSink()
    scheduler.submit(request("s", [13], 10, sink))  # tokens 14, 15 (stop)
    drain(scheduler)
    assert sink.log == [("started",), ("step", 14, "o"), ("step", 15, ""), ("finished", "stop", 2)]


def test_kv_cache_full_keeps_the_job_waiting_until_a_slot_frees():
    engine = FakeEngine(max_batch=4, n_slots=1)  # batch room, but one KV slot
    scheduler = Scheduler(engine)
    a, b = RecordingSink(), RecordingSink()
    scheduler.submit(request("a", [0], 2, a))
    scheduler.submit(request("b", [0], 2, b))
    scheduler.run_once()
    assert b.log == [] and scheduler.n_waiting == 1
    drain(scheduler)
    assert b.log[-1] == ("finished", "length", 2)


def test_thread_serves_submissions_and_stops():
    turns: list[int] = []
    scheduler = Scheduler(FakeEngine(max_batch=3), on_turn=lambda: turns.append(1))
    scheduler.start()
    done = threading.Event()
    finished: list[str] = []

    class Sink(RecordingSink):
        def finished(self, finish_reason: str, completion_tokens: int, now: float) -> None:
            finished.append(finish_reason)
            if len(finished) == 5:
                done.set()

    for i in range(5):
        scheduler.submit(request(f"j{i}", [i], 4, Sink()))
    assert done.wait(5.0)
    scheduler.stop()
    assert finished == ["length"] * 5
    assert len(turns) >= 4  # 5 jobs of 4 tokens, 3 at a time: at least 4 engine turns, each announced
    with pytest.raises(SchedulerClosed):
        scheduler.submit(request("late", [1], 1, RecordingSink()))


def test_log_lines_about_a_job_carry_its_id_and_correlation_id(caplog):
    engine = FakeEngine(max_batch=1)
    cancelled: set[str] = set()
    scheduler = Scheduler(engine, cancelled=lambda ids: cancelled & set(ids))
    sinks = RecordingSink(), RecordingSink(), RecordingSink()
    scheduler.submit(request("run", [0], 20, sinks[0], correlation_id="req-1"))
    scheduler.submit(request("wait", [0], 20, sinks[1], correlation_id="req-2"))
    scheduler.submit(request("empty", [], 20, sinks[2]))
    scheduler.run_once()
    cancelled.update({"run", "wait"})
    with caplog.at_level(logging.DEBUG, logger="worker.scheduler"):
        drain(scheduler)
    assert sorted(r.getMessage() for r in caplog.records) == [
        "job empty cid -: failed: InvalidJob: job empty: the prompt has no tokens",
        "job run cid req-1: cancelled after 2 tokens",
        "job run cid req-1: finished (cancelled) after 2 tokens",
        "job wait cid req-2: cancelled while waiting; never started",
        "job wait cid req-2: finished (cancelled) after 0 tokens"]
    assert {(r.job_id, r.correlation_id) for r in caplog.records} == {
        ("run", "req-1"), ("wait", "req-2"), ("empty", "-")}


class ClosingEngine(FakeEngine):
    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.closed_on: list[str] = []

    def close(self) -> None:
        self.calls.append(("close", []))
        self.closed_on.append(threading.current_thread().name)


def test_stop_closes_the_engine_on_the_scheduler_thread_after_its_last_step():
    engine = ClosingEngine(max_batch=2)
    scheduler = Scheduler(engine)
    scheduler.start()
    done = threading.Event()

    class Sink(RecordingSink):
        def finished(self, finish_reason: str, completion_tokens: int, now: float) -> None:
            done.set()

    scheduler.submit(request("a", [1], 3, Sink()))
    assert done.wait(5.0)
    scheduler.stop(close_engine=True)
    assert engine.closed_on == ["orcd-scheduler"]
    assert engine.calls == [("prefill", [0]), ("decode", [0]), ("decode", [0]), ("close", [])]


def test_stop_leaves_the_engine_open_unless_asked_and_closes_here_without_a_thread():
    running, idle = ClosingEngine(), ClosingEngine()
    scheduler = Scheduler(running)
    scheduler.start()
    scheduler.stop()
    assert running.closed_on == []
    Scheduler(idle).stop(close_engine=True)
    assert idle.closed_on == [threading.current_thread().name]


def test_first_tokens_are_announced_before_the_decode_step():
    engine = FakeEngine(max_batch=2)
    seen: list[tuple] = []
    sink = RecordingSink()
    scheduler = Scheduler(engine, on_turn=lambda: seen.append((list(engine.calls), list(sink.log))))
    scheduler.submit(request("a", [1], 3, sink))
    scheduler.run_once()
    assert seen == [([("prefill", [0])], [("started",), ("step", 2, "c")])]
    assert engine.calls[-1] == ("decode", [0])


def test_decode_goes_through_the_engines_device_sampling():
    from gpu.generation import Generation
    from gpu.params import SamplingParams
    from tests.gpu.generation_fakes import BOS, ByteTokenizer, DeviceSamplingEngine, hashed_logits
    from tests.gpu.generation_fakes import FakeEngine as LogitsEngine

    tok = ByteTokenizer()
    params = [SamplingParams(max_tokens=6, seed=11 + i, ignore_eos=True, logprobs=i % 2) for i in range(4)]

    def serve(engine) -> list[RecordingSink]:
        scheduler = Scheduler(engine)
        sinks = [RecordingSink() for _ in params]
        for i, (p, sink) in enumerate(zip(params, sinks, strict=True)):
            prompt = [BOS, 40 + i]
            scheduler.submit(Request(job_id=f"j{i}", prompt_ids=prompt, max_tokens=6, sink=sink,
                                     new_generation=lambda p=p, prompt=prompt: Generation(prompt, p, tok)))
        drain(scheduler)
        return sinks

    want = serve(LogitsEngine(hashed_logits(tok.vocab_size), max_batch=4))
    engine = DeviceSamplingEngine(LogitsEngine(hashed_logits(tok.vocab_size), max_batch=4))
    got = serve(engine)
    assert [s.log for s in got] == [s.log for s in want]
    assert [len(s.tokens) for s in got] == [6] * 4
    assert engine.mixed_calls == [[False, True, False, True]] * 5  # jobs 1 and 3 want logprobs


def test_decode_steps_queued_ahead_give_the_same_jobs_and_cancel_within_a_step():
    from gpu.generation import Generation
    from gpu.params import SamplingParams
    from tests.gpu.generation_fakes import BOS, AheadEngine, ByteTokenizer, hashed_logits
    from tests.gpu.generation_fakes import FakeEngine as LogitsEngine

    tok = ByteTokenizer()
    params = [SamplingParams(max_tokens=3 + i, seed=21 + i, ignore_eos=i % 2 == 0) for i in range(5)]

    def serve(engine, cancel_after: int | None = None) -> list[RecordingSink]:
        cancelled: set[str] = set()
        scheduler = Scheduler(engine, cancelled=lambda ids: cancelled & set(ids))
        sinks = [RecordingSink() for _ in params]
        for i, (p, sink) in enumerate(zip(params, sinks, strict=True)):
            prompt = [BOS, 50 + i]
            scheduler.submit(Request(job_id=f"j{i}", prompt_ids=prompt, max_tokens=p.max_tokens, sink=sink,
                                     new_generation=lambda p=p, prompt=prompt: Generation(prompt, p, tok)))
        for _ in range(100):
            if cancel_after is not None and len(sinks[4].tokens) >= cancel_after:
                cancelled.add("j4")
            if not scheduler.run_once() and not scheduler.n_waiting:
                return sinks
        raise AssertionError("scheduler still busy")

    want = serve(LogitsEngine(hashed_logits(tok.vocab_size), max_batch=2))
    engine = AheadEngine(LogitsEngine(hashed_logits(tok.vocab_size), max_batch=2))
    assert [s.log for s in serve(engine)] == [s.log for s in want]
    kinds = [kind for kind, _ in engine.events]
    assert any(kinds[i : i + 2] == ["launch", "launch"] for i in range(len(kinds)))  # one queued ahead
    assert engine.inner.tokens == {}
    engine = AheadEngine(LogitsEngine(hashed_logits(tok.vocab_size), max_batch=2))
    got = serve(engine, cancel_after=2)
    assert [s.log for s in got[:4]] == [s.log for s in want[:4]]
    assert got[4].log[-1] == ("finished", "cancelled", 2) and got[4].tokens == want[4].tokens[:2]
    assert engine.inner.tokens == {}


class ArrivingEngine(FakeEngine):
    """A FakeEngine whose prefills bring new submissions, as a burst of jobs does on a real worker."""

    def __init__(self, arrivals: list[Request], **kw) -> None:
        super().__init__(**kw)
        self.arrivals, self.scheduler = arrivals, None

    def prefill(self, slots, prompts):
        if self.arrivals:
            self.scheduler.submit(self.arrivals.pop(0))
        return super().prefill(slots, prompts)


@pytest.mark.parametrize("window_s, expected", [
    (10.0, [("prefill", [0]), ("prefill", [1]), ("prefill", [2]), ("decode", [0, 1, 2])]),
    (0.0, [("prefill", [0]), ("decode", [0]), ("prefill", [1]), ("decode", [0, 1]), ("prefill", [2]),
           ("decode", [0, 1, 2])]),
])
def test_jobs_arriving_during_a_prefill_join_before_the_decode_step_within_the_window(window_s, expected):
    sinks = [RecordingSink() for _ in range(3)]
    engine = ArrivingEngine([request(f"j{i}", [i + 1], 4, sinks[i]) for i in (1, 2)], max_batch=4)
    scheduler = engine.scheduler = Scheduler(engine, admit_window_s=window_s)
    scheduler.submit(request("j0", [1], 4, sinks[0]))
    for _ in range(3):
        scheduler.run_once()
    assert engine.calls[:len(expected)] == expected
    drain(scheduler)
    assert [len(sink.tokens) for sink in sinks] == [4, 4, 4]


def test_submit_many_hands_a_group_over_at_once():
    engine = FakeEngine(max_batch=4)
    scheduler = Scheduler(engine)
    sinks = [RecordingSink() for _ in range(3)]
    scheduler.submit_many([request(f"g{k}", [k + 1], 1, sink) for k, sink in enumerate(sinks)])
    assert scheduler.n_waiting == 3
    drain(scheduler)
    assert engine.calls[0] == ("prefill", [0, 1, 2])  # one pass for the whole group
    assert [sink.log[-1] for sink in sinks] == [("finished", "length", 1)] * 3
    scheduler.stop()
    with pytest.raises(SchedulerClosed, match="job h0: the scheduler has stopped"):
        scheduler.submit_many([request("h0", [1], 1, RecordingSink())])
