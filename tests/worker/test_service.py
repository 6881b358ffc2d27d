"""The worker's service without Celery: real engine (numpy, tiny model) + fakeredis.

A job's stream reproduces `orcd run`'s tokens; a re-run after a crash publishes only what is missing;
bad jobs end with an error event and the worker keeps serving.
"""

from __future__ import annotations

import logging
import threading

import fakeredis
import pytest

from gpu.params import SamplingParams
from tests.worker.tiny_model import MAX_CONTEXT, reference, tiny_model  # noqa: F401 (fixture)
from tests.worker.waiting import wait_until
from worker import keys
from worker.client import Client, assemble
from worker.schemas import Job
from worker.service import WorkerService
from worker.settings import load_settings
from worker.streams import append_events, read_log


@pytest.fixture(params=[True, False], ids=["engine-process", "in-process"])
def stack(tiny_model, request):  # noqa: F811
    settings = load_settings(redis_url="redis://unused", model=str(tiny_model), backend="numpy", max_batch=4,
                             max_context=MAX_CONTEXT, chunk_tokens=4, chunk_ms=0.0, job_timeout_s=30,
                             visibility_timeout_s=60, engine_process=request.param)
    redis = fakeredis.FakeRedis()
    sent: list = []
    client = Client(settings=settings, redis=redis, sender=lambda job, queue, priority: sent.append(job))
    service = WorkerService.load(settings, redis, name="w1")
    yield client, service, sent
    service.close()


def run(client, service, sent, job) -> list:
    client.submit(job)
    outcome = service.run_job(sent[-1].model_dump(mode="json"))
    assert outcome["job_id"] == job.id
    return read_log(client.redis, job.id)


def test_job_stream_matches_orcd_run(stack, tiny_model):  # noqa: F811
    client, service, sent = stack
    params = SamplingParams(max_tokens=10, seed=42, temperature=0.9, ignore_eos=True)
    log = run(client, service, sent, Job(id="j1", prompt="Hello there", params=params))
    ids, text, reason = reference(tiny_model, "Hello there", params)
    result = assemble("j1", log)
    assert (result.token_ids, result.text, result.finish_reason) == (ids, text, reason)
    assert [e.seq for e in log] == list(range(1, len(log) + 1))
    assert [e.type for e in log[:2]] + [log[-1].type] == ["queued", "started", "done"]
    tokens = [e for e in log if e.type == "tokens"]
    assert [len(e.ids) for e in tokens][0] == 1 and all(len(e.ids) <= 4 for e in tokens)
    assert [e.index for e in tokens] == [sum(len(t.ids) for t in tokens[:k]) for k in range(len(tokens))]
    assert result.usage.completion_tokens == 10


def test_rerun_after_a_crash_publishes_only_what_is_missing(stack):
    client, service, sent = stack
    params = SamplingParams(max_tokens=12, seed=5, ignore_eos=True)
    full = run(client, service, sent, Job(id="full", prompt="abc", params=params))
    # the same job again, as if its first worker died after its 4th event (queued, started, 2 chunks)
    client.submit(Job(id="crashed", prompt="abc", params=params))
    first_attempt = [e.model_copy(update={"job_id": "crashed"}) for e in full[1:4]]
    append_events(client.redis, first_attempt, live_ttl_s=60, result_ttl_s=60)
    service.run_job(sent[-1].model_dump(mode="json"))
    log = read_log(client.redis, "crashed")
    assert [e.seq for e in log] == list(range(1, len(log) + 1))
    assert [(e.type, getattr(e, "attempt", None)) for e in log if e.type == "started"] == [
        ("started", 1), ("started", 2)]
    assert log[4].type == "started"
    rerun = assemble("crashed", log)
    original = assemble("full", full)
    assert (rerun.token_ids, rerun.text) == (original.token_ids, original.text)
    tokens = [e for e in log if e.type == "tokens"]
    assert tokens[2].index == full[3].index + len(full[3].ids)


def test_redelivered_after_the_end_does_nothing(stack):
    client, service, sent = stack
    log = run(client, service, sent, Job(id="once", prompt="x", params=SamplingParams(max_tokens=3, seed=1)))
    assert service.run_job(sent[-1].model_dump(mode="json")) == {"job_id": "once", "status": "already-ended"}
    assert read_log(client.redis, "once") == log


def test_malformed_jobs_end_with_an_error_and_the_worker_keeps_serving(stack):
    client, service, sent = stack
    client.submit(Job(id="bad", prompt="x"))
    payload = sent[-1].model_dump(mode="json") | {"params": {"temperature": "hot"}}
    assert service.run_job(payload) == {"job_id": "bad", "status": "error"}
    [_, error] = read_log(client.redis, "bad")
    assert (error.type, error.seq, error.error_type) == ("error", 2, "InvalidJob")
    assert "temperature" in error.message
    assert client.status("bad")["status"] == "error"
    assert service.run_job({"prompt": "no id"}) == {"job_id": None, "status": "dropped"}
    log = run(client, service, sent, Job(id="good", prompt="x", params=SamplingParams(max_tokens=2, seed=1)))
    assert log[-1].type == "done"


def test_too_long_for_the_context_is_refused(stack):
    client, service, sent = stack
    job = Job(id="long", prompt="x", params=SamplingParams(max_tokens=MAX_CONTEXT))
    log = run(client, service, sent, job)
    assert log[-1].type == "error" and log[-1].error_type == "ContextTooLong"
    assert f"exceeds the worker's max context ({MAX_CONTEXT})" in log[-1].message


def test_other_model_is_refused(stack):
    client, service, sent = stack
    client.submit(Job(id="other", prompt="x", model="some-other-model"))
    service.run_job(sent[-1].model_dump(mode="json"))
    error = read_log(client.redis, "other")[-1]
    assert (error.error_type, error.message) == (
        "InvalidJob", "job other is for model 'some-other-model'; this worker serves 'tiny-queue'")


def test_cancelled_before_start_never_runs(stack):
    client, service, sent = stack
    client.submit(Job(id="c", prompt="x"))
    client.cancel("c")
    service.run_job(sent[-1].model_dump(mode="json"))
    log = read_log(client.redis, "c")
    assert [e.type for e in log] == ["queued", "done"]
    assert (log[-1].finish_reason, log[-1].usage.completion_tokens) == ("cancelled", 0)
    assert client.status("c")["status"] == "cancelled"


def test_heartbeat_describes_the_worker(stack):
    client, service, _ = stack
    beat = service.heartbeat()
    assert (beat["name"], beat["model"], beat["queue"], beat["backend"], beat["max_batch"]) == (
        "w1", "tiny-queue", "orcd.tiny-queue", "numpy", 4)
    wait_until(lambda: client.redis.exists(keys.worker("w1")), what="the heartbeat thread's first beat")
    assert client.redis.hget(keys.worker("w1"), "model") == b"tiny-queue"
    assert 0 < client.redis.ttl(keys.worker("w1")) <= 15
    service.close()
    assert not client.redis.exists(keys.worker("w1"))



def test_correlation_id_is_in_every_event_and_every_log_line_about_the_job(stack, caplog):
    client, service, sent = stack
    params = SamplingParams(max_tokens=9, seed=3, ignore_eos=True)
    with caplog.at_level(logging.DEBUG, logger="worker"):
        job = Job(id="traced", prompt="abc", params=params, correlation_id="req-42")
        log = run(client, service, sent, job)
        client.submit(Job(id="bad-traced", prompt="x", correlation_id="req-43"))
        service.run_job(sent[-1].model_dump(mode="json") | {"params": {"temperature": "hot"}})
    assert [e.type for e in log[:2]] + [log[-1].type] == ["queued", "started", "done"]
    assert sum(len(e.ids) for e in log if e.type == "tokens") == 9
    assert [(e.seq, e.v, e.correlation_id) for e in log] == [(n, 2, "req-42") for n in range(1, len(log) + 1)]
    bad = read_log(client.redis, "bad-traced")
    assert [(e.type, e.correlation_id) for e in bad] == [("queued", "req-43"), ("error", "req-43")]
    about = [r.getMessage() for r in caplog.records if "traced" in r.getMessage()]
    scheduler_line = ["job traced cid req-42: finished (length) after 9 tokens"]  # the engine process logs
    assert about == [  # its own lines to its stderr
        "job traced cid req-42: attempt 1, 2 prompt tokens, max_tokens 9, priority 5",
        *(scheduler_line if not service.settings.engine_process else []),
        f"job traced cid req-42: done (length): 9 tokens, ttft {log[-1].timings.ttft_ms} ms",
        "job bad-traced cid req-43: rejected: " + bad[-1].message]


def test_service_records_metrics_and_serves_them_on_its_port(tiny_model):  # noqa: F811
    import socket
    import urllib.request

    with socket.socket() as probe:  # a free port for the settings (0 means "off" there)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = load_settings(redis_url="redis://unused", model=str(tiny_model), backend="numpy", max_batch=4,
                             max_context=MAX_CONTEXT, job_timeout_s=30, visibility_timeout_s=60,
                             metrics_port=port)
    sent: list = []
    client = Client(settings=settings, redis=fakeredis.FakeRedis(), sender=lambda job, q, p: sent.append(job))
    service = WorkerService.load(settings, client.redis, name="w-metrics")
    try:
        run(client, service, sent, Job(id="ok", prompt="x", params=SamplingParams(max_tokens=4, seed=1,
                                                                                   ignore_eos=True)))
        client.submit(Job(id="bad", prompt="x"))
        service.run_job(sent[-1].model_dump(mode="json") | {"params": {"temperature": "hot"}})
        client.submit(Job(id="off", prompt="x"))
        client.cancel("off")
        service.run_job(sent[-1].model_dump(mode="json"))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        service.close()
    lines = set(text.splitlines())
    assert {"orcd_worker_jobs_started_total 1.0", 'orcd_worker_jobs_finished_total{reason="length"} 1.0',
            'orcd_worker_jobs_finished_total{reason="error"} 1.0',
            'orcd_worker_jobs_finished_total{reason="cancelled"} 1.0',
            'orcd_worker_errors_total{type="InvalidJob"} 1.0', "orcd_worker_tokens_generated_total 4.0",
            "orcd_worker_ttft_seconds_count 1.0", "orcd_worker_decode_tokens_per_second_count 1.0"} <= lines


def test_a_group_runs_each_job_and_a_redelivered_group_resumes_only_what_is_missing(stack, tiny_model):  # noqa: F811
    client, service, _ = stack
    groups: list = []
    grouping = Client(settings=client.settings, redis=client.redis, sender=lambda *a: None,
                      group_sender=lambda jobs, queue, priority, group: groups.append((jobs, queue, group)))
    params = [SamplingParams(max_tokens=n, seed=20 + n, temperature=0.9, ignore_eos=True) for n in (3, 9, 6)]
    jobs = [Job(id=f"g{k}", prompt=f"group job {k}", params=p) for k, p in enumerate(params)]
    grouping.submit_many(jobs, group_size=3)
    [(members, queue, group)] = groups
    assert client.queue_depth(queue) == 2  # the hash's count (no Celery list here): 3 jobs - 1 message
    payloads = [job.model_dump(mode="json") for job in members]
    outcomes = service.run_jobs(payloads, group=(queue, group))
    assert [o["status"] for o in outcomes] == ["done"] * 3
    assert client.redis.hlen(keys.queue_groups(queue)) == 0
    logs = {job.id: read_log(client.redis, job.id) for job in jobs}
    for job, p in zip(jobs, params, strict=True):
        ids, text, _ = reference(tiny_model, job.prompt, p)
        assert (assemble(job.id, logs[job.id]).token_ids, assemble(job.id, logs[job.id]).text) == (ids, text)
        assert [e.seq for e in logs[job.id]] == list(range(1, len(logs[job.id]) + 1))
    # redelivered as if its worker died: g0 had ended, g1 had published up to its first tokens event
    client.redis.delete(keys.job_events("g1"))
    append_events(client.redis, logs["g1"][:3], live_ttl_s=60, result_ttl_s=60)
    outcomes = service.run_jobs(payloads, group=(queue, group))
    assert [o["status"] for o in outcomes] == ["already-ended", "done", "already-ended"]
    assert read_log(client.redis, "g0") == logs["g0"]
    again = read_log(client.redis, "g1")
    assert [e.seq for e in again] == list(range(1, len(again) + 1))
    assert [(e.type, e.attempt) for e in again if e.type == "started"] == [("started", 1), ("started", 2)]
    assert assemble("g1", again).token_ids == assemble("g1", logs["g1"]).token_ids


def test_tasks_arriving_while_one_is_prepared_share_one_read_and_one_hand_over(stack, tiny_model):  # noqa: F811
    """GroupCommit: the first task's hand-over is held; three tasks meanwhile go out in one batch (one
    of them invalid: it ends with its own error), each task still returning its own job's outcome."""
    client, service, sent = stack
    params = SamplingParams(max_tokens=4, seed=5, temperature=0.9, ignore_eos=True)
    jobs = [Job(id=f"t{k}", prompt=f"task {k}", params=params) for k in range(4)]
    for job in jobs:
        client.submit(job)
    payloads = [job.model_dump(mode="json") for job in sent[-4:]]
    payloads[2] = payloads[2] | {"params": {"temperature": "hot"}}
    handed, release = [], threading.Event()
    submit_many = service.scheduler.submit_many

    def held(requests):
        handed.append([r.job_id for r in requests])
        if len(handed) == 1:
            release.wait(10)
        submit_many(requests)

    service.scheduler.submit_many = held
    outcomes: dict = {}
    threads = []
    for k, payload in enumerate(payloads):
        thread = threading.Thread(target=lambda p=payload: outcomes.__setitem__(p["id"], service.run_job(p)))
        thread.start()
        threads.append(thread)
        wait_until(lambda k=k: handed == [["t0"]] if k == 0 else len(service._prepare._queued) >= k,
                   timeout_s=10, what=f"task {k} to reach the hand-over")
    release.set()
    for thread in threads:
        thread.join(30)
    assert handed == [["t0"], ["t1", "t3"]]  # t2 ended before the hand-over (invalid)
    assert {job_id: o["status"] for job_id, o in outcomes.items()} == {"t0": "done", "t1": "done",
                                                                      "t2": "error", "t3": "done"}
    for job in jobs:
        log = read_log(client.redis, job.id)
        assert [e.seq for e in log] == list(range(1, len(log) + 1))
    ids, text, _ = reference(tiny_model, "task 3", params)
    assert assemble("t3", read_log(client.redis, "t3")).token_ids == ids
