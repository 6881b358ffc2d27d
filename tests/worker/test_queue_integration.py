"""The queue end to end: real Redis (db 14), real `orcd worker` subprocesses, numpy engine, tiny model.

Marker `integration`. Each test uses queues of its own; the module's worker serves the tests that
need one running worker, the crash test starts its own two.
"""

from __future__ import annotations

import json
import threading
import time
from functools import partial

import pytest

from gpu.params import SamplingParams
from tests.worker.tiny_model import MAX_CONTEXT, Reference, tiny_model  # noqa: F401 (fixture)
from tests.worker.waiting import wait_until
from tests.worker.workers import (  # noqa: F401 (fixtures)
    REDIS_URL,
    WorkerProcess,
    own_database,
    relay,
    unique_queue,
)
from worker import keys
from worker.app import make_app
from worker.client import Client
from worker.errors import QueueFull
from worker.schemas import Job, Queued
from worker.settings import load_settings
from worker.streams import append_events, read_log
from worker.tasks import GENERATE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def client_for(model, queue: str, **settings) -> Client:
    return Client(settings=load_settings(redis_url=REDIS_URL, model=str(model), queue=queue, **settings))


def assert_as_reference(reference, prompts: list[str], params: list, results: list) -> None:
    """Each result has the reference engine's tokens, text and finish reason, and events numbered 1, 2, ..."""
    for prompt, p, result in zip(prompts, params, results, strict=True):
        ids, text, reason = reference(prompt, p)
        assert (result.token_ids, result.text, result.finish_reason) == (ids, text, reason), prompt
        assert [e.seq for e in result.events] == list(range(1, len(result.events) + 1)), prompt


def seqs(job_id: str, client: Client) -> list[int]:
    return [e.seq for e in read_log(client.redis, job_id)]


wait_for = partial(wait_until, timeout_s=20.0, every_s=0.02)  # a worker subprocess's progress in Redis


@pytest.fixture(scope="module")
def reference(tiny_model):  # noqa: F811
    return Reference(tiny_model)


@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory):  # noqa: F811
    """One worker: batch 4, 20 ms per decode step (slow enough to cancel mid-job)."""
    queue = unique_queue("served")
    worker = WorkerProcess(tiny_model, queue, tmp_path_factory.mktemp("logs") / "worker.log", max_batch=4,
                           concurrency=8, step_delay_ms=20, chunk_ms=10).wait_ready()
    client = client_for(tiny_model, queue)
    yield client, worker
    worker.stop()
    client.close()


def test_twenty_concurrent_jobs_finish_with_contiguous_seqs(served, reference):
    client, _ = served
    params = [SamplingParams(max_tokens=6 + i % 4, seed=100 + i, temperature=0.8, ignore_eos=True)
              for i in range(20)]
    prompts = [f"job number {i}" for i in range(20)]
    handles = [client.submit(Job(prompt=prompt, params=p)) for prompt, p in zip(prompts, params, strict=True)]
    results = [h.result(timeout_s=30) for h in handles]
    assert_as_reference(reference, prompts, params, results)
    for handle, result in zip(handles, results, strict=True):  # the stream in Redis holds the same seqs
        assert [e.seq for e in result.events] == seqs(handle.id, client)


def test_a_subscriber_attaching_late_gets_every_token(served, reference):
    client, _ = served
    params = SamplingParams(max_tokens=30, seed=7, ignore_eos=True)
    handle = client.submit(Job(prompt="late reader", params=params))
    wait_for(lambda: any(e.type == "tokens" and e.index > 0 for e in read_log(client.redis, handle.id)),
             what="the job's second chunk")
    events = list(handle.stream(timeout_s=20))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].type == "queued" and events[-1].type == "done"
    ids, text, _ = reference("late reader", params)
    assert [i for e in events if e.type == "tokens" for i in e.ids] == ids
    assert "".join(e.text for e in events if e.type == "tokens") == text


def test_cancel_a_running_job(served):
    client, _ = served
    handle = client.submit(Job(prompt="long one", params=SamplingParams(max_tokens=100, seed=1,
                                                                         ignore_eos=True)))
    wait_for(lambda: any(e.type == "tokens" for e in read_log(client.redis, handle.id)), what="first token")
    asked = time.monotonic()
    assert handle.cancel() is True
    result = handle.result(timeout_s=10)
    assert result.finish_reason == "cancelled"
    assert 1 <= result.usage.completion_tokens < 100
    assert time.monotonic() - asked < 2.0
    assert client.status(handle.id)["status"] == "cancelled"
    assert handle.cancel() is False


def test_cancel_a_queued_job_it_never_runs(served):
    client, _ = served
    long = SamplingParams(max_tokens=100, seed=2, ignore_eos=True)
    blockers = [client.submit(Job(prompt=f"blocker {i}", params=long)) for i in range(4)]  # fill batch of 4
    wait_for(lambda: all(any(e.type == "started" for e in read_log(client.redis, b.id)) for b in blockers),
             what="the batch to fill")
    queued = client.submit(Job(prompt="never", params=SamplingParams(max_tokens=5, seed=3)))
    assert queued.cancel() is True
    for blocker in blockers:
        blocker.cancel()
    events = list(queued.stream(timeout_s=20))
    assert [e.type for e in events] == ["queued", "done"]
    assert (events[-1].finish_reason, events[-1].usage.completion_tokens) == ("cancelled", 0)
    assert all(b.result(timeout_s=20).finish_reason == "cancelled" for b in blockers)


def test_malformed_job_gets_an_error_event_and_the_worker_keeps_serving(served):
    client, worker = served
    queue = client.settings.queue_name
    job_id = "malformed-1"
    client.redis.hset(keys.job_meta(job_id), "status", "queued")
    append_events(client.redis, [Queued(job_id=job_id, seq=1, model="tiny-queue", queue=queue, priority=5)],
                  live_ttl_s=60, result_ttl_s=60)
    app = make_app(client.settings)
    app.send_task(GENERATE, args=[{"id": job_id, "prompt": "x", "params": {"temperature": "hot"}}],
                  queue=queue)
    events = list(client.stream(job_id, timeout_s=20))
    assert [(e.seq, e.type) for e in events] == [(1, "queued"), (2, "error")]
    assert events[-1].error_type == "InvalidJob" and "temperature" in events[-1].message
    ok = client.submit(Job(prompt="still here", params=SamplingParams(max_tokens=3, seed=1)))
    assert ok.result(timeout_s=20).finish_reason in ("length", "stop")
    assert worker.proc.poll() is None


def test_queue_full_when_the_model_queue_is_at_its_limit(tiny_model):  # noqa: F811
    queue = unique_queue("full")  # no worker consumes it
    client = client_for(tiny_model, queue, max_queue=3)
    try:
        for i in range(3):
            client.submit(Job(prompt=f"{i}", priority=i * 4))
        assert client.queue_depth(queue) == 3
        with pytest.raises(QueueFull, match=rf"queue '{queue}' is full \(3 jobs waiting, limit 3\)"):
            client.submit(Job(prompt="one too many"))
    finally:
        client.redis.delete(*keys.queue_lists(queue))
        client.close()


def test_sigkill_mid_job_a_second_worker_finishes_it_without_gap_or_duplicate(relay, reference):  # noqa: F811
    client = relay.client
    params = SamplingParams(max_tokens=40, seed=11, temperature=0.9, ignore_eos=True)
    handle = client.submit(Job(prompt="survive a crash", params=params))
    seen: list = []
    reader = threading.Thread(target=lambda: seen.extend(handle.stream(timeout_s=60)))
    reader.start()
    wait_for(lambda: sum(e.type == "tokens" for e in read_log(client.redis, handle.id)) >= 3,
             what="three chunks from the first worker")
    relay.first.kill()
    before = read_log(client.redis, handle.id)
    relay.start_second()
    reader.join(45)
    assert not reader.is_alive()
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    assert seen[:len(before)] == before
    assert [(e.type, e.attempt) for e in seen if e.type == "started"] == [("started", 1), ("started", 2)]
    ids, text, reason = reference("survive a crash", params)
    assert [i for e in seen if e.type == "tokens" for i in e.ids] == ids
    assert "".join(e.text for e in seen if e.type == "tokens") == text
    assert (seen[-1].type, seen[-1].finish_reason) == ("done", reason)



def test_max_context_is_the_worker_setting(served):
    client, _ = served
    handle = client.submit(Job(prompt="x", params=SamplingParams(max_tokens=MAX_CONTEXT)))
    events = list(handle.stream(timeout_s=20))
    assert events[-1].type == "error" and events[-1].error_type == "ContextTooLong"


def test_status_lists_workers_models_and_queue_depths(served, capsys):
    from worker.cli import main

    client, worker = served
    assert main(["status", "--redis-url", REDIS_URL, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    [me] = [w for w in report["workers"] if w["name"] == worker.name]
    assert (me["model"], me["queue"], me["backend"], me["max_batch"]) == (
        "tiny-queue", client.settings.queue_name, "numpy", "4")
    assert report["queues"][client.settings.queue_name] == 0
    assert main(["status", "--redis-url", REDIS_URL]) == 0
    text = capsys.readouterr().out
    assert f"  {worker.name}: model tiny-queue on numpy gpu 0; 0 running, 0 waiting (batch 4)" in text
    assert f"  {client.settings.queue_name}: 0 waiting" in text


def test_async_stream_and_result(served, reference):
    import asyncio

    client, _ = served
    params = SamplingParams(max_tokens=8, seed=21, ignore_eos=True)
    handle = client.submit(Job(prompt="async reader", params=params))

    async def read():
        events = [e async for e in handle.astream(timeout_s=20)]
        return events, await handle.aresult(timeout_s=20)

    events, result = asyncio.run(read())
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert result.token_ids == reference("async reader", params)[0]


def test_a_busy_worker_takes_the_most_urgent_job_next(tiny_model, tmp_path):  # noqa: F811
    queue = unique_queue("priority")
    worker = WorkerProcess(tiny_model, queue, tmp_path / "priority.log", max_batch=1, concurrency=1,
                           step_delay_ms=20).wait_ready()
    client = client_for(tiny_model, queue)
    try:
        blocker = client.submit(Job(prompt="blocker", params=SamplingParams(max_tokens=25, seed=1,
                                                                            ignore_eos=True)))
        wait_for(lambda: any(e.type == "started" for e in read_log(client.redis, blocker.id)),
                 what="the blocker to start")
        short = SamplingParams(max_tokens=2, seed=2)
        low = [client.submit(Job(prompt=f"low {i}", priority=1, params=short)) for i in range(2)]
        high = client.submit(Job(prompt="high", priority=9, params=short))
        for handle in (blocker, high, *low):
            handle.result(timeout_s=30)
        started = {h.id: next(e.ts for e in read_log(client.redis, h.id) if e.type == "started")
                   for h in (blocker, high, *low)}
        assert sorted(started, key=started.get) == [blocker.id, high.id, low[0].id, low[1].id]
    finally:
        worker.stop()
        client.close()
