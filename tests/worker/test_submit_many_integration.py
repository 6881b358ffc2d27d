"""Client.submit_many end to end: real Redis (db 14), real `orcd worker` subprocesses, numpy, tiny model.

Marker `integration`. Jobs sent several per Celery message (`orcd.generate_many`) finish exactly as
lone jobs do; a job of a group cancelled while queued never runs; QueueFull counts jobs; a worker
killed mid-group has the group redelivered, and the second worker re-runs only the unfinished jobs.
"""

from __future__ import annotations

import re
import threading

import pytest

from gpu.params import SamplingParams
from tests.worker import workers
from tests.worker.test_queue_integration import assert_as_reference, client_for, seqs, wait_for
from tests.worker.tiny_model import Reference, tiny_model  # noqa: F401 (fixture)
from tests.worker.workers import own_database, relay  # noqa: F401 (fixtures)
from worker import keys
from worker.errors import QueueFull
from worker.schemas import Job
from worker.streams import read_log

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def reference(tiny_model):  # noqa: F811
    return Reference(tiny_model)


def received_groups(log) -> list[str]:
    return re.findall(r"orcd\.generate_many\[(group-\w+)\] received", log.read_text())


def test_twenty_jobs_in_groups_finish_like_lone_jobs(tiny_model, reference, tmp_path):  # noqa: F811
    queue = workers.unique_queue("many")
    worker = workers.WorkerProcess(tiny_model, queue, tmp_path / "worker.log", max_batch=8, concurrency=8,
                           chunk_ms=10).wait_ready()
    client = client_for(tiny_model, queue)
    try:
        params = [SamplingParams(max_tokens=5 + i % 4, seed=300 + i, temperature=0.8, ignore_eos=True)
                  for i in range(20)]
        jobs = [Job(prompt=f"grouped {i}", params=p, priority=9 if i < 12 else 3)
                for i, p in enumerate(params)]
        assert client.group_size(queue, 12) == 8
        handles = client.submit_many(jobs)
        assert [h.id for h in handles] == [job.id for job in jobs]
        results = [h.result(timeout_s=30) for h in handles]
    finally:
        worker.stop()
        client.close()
    assert_as_reference(reference, [job.prompt for job in jobs], params, results)
    assert all([e.type for e in result.events][:2] == ["queued", "started"] for result in results)
    assert len(received_groups(worker.log)) == 3  # priority 9: 12 jobs in 2 groups of 6; priority 3: 8 in 1
    assert client.queue_depth(queue) == 0


def test_a_queued_job_of_a_group_cancelled_never_runs(tiny_model, tmp_path):  # noqa: F811
    queue = workers.unique_queue("many-cancel")  # no worker yet: the group waits in Redis
    client = client_for(tiny_model, queue)
    params = SamplingParams(max_tokens=4, seed=1, ignore_eos=True)
    handles = client.submit_many([Job(prompt=f"c{i}", params=params) for i in range(3)], group_size=3)
    assert client.queue_depth(queue) == 3
    assert handles[1].cancel() is True
    worker = workers.WorkerProcess(tiny_model, queue, tmp_path / "worker.log").wait_ready()
    try:
        events = [list(h.stream(timeout_s=20)) for h in handles]
    finally:
        worker.stop()
        client.close()
    assert [e.type for e in events[1]] == ["queued", "done"] and events[1][-1].finish_reason == "cancelled"
    assert [events[k][-1].finish_reason for k in (0, 2)] == ["length", "length"]
    assert len(received_groups(worker.log)) == 1


def test_queue_full_counts_jobs_not_messages(tiny_model):  # noqa: F811
    queue = workers.unique_queue("many-full")  # no worker consumes it
    client = client_for(tiny_model, queue, max_queue=8)
    try:
        client.submit_many([Job(prompt=str(i)) for i in range(6)], group_size=6)
        messages = sum(client.redis.llen(name) for name in keys.queue_lists(queue))
        assert (messages, client.queue_depth(queue)) == (1, 6)
        with pytest.raises(QueueFull, match=rf"queue '{queue}' is full \(6 jobs waiting, limit 8\)"):
            client.submit_many([Job(prompt=str(i)) for i in range(3)])
        client.submit_many([Job(prompt=str(i)) for i in range(2)])
        with pytest.raises(QueueFull, match=r"\(8 jobs waiting, limit 8\)"):
            client.submit(Job(prompt="one too many"))
    finally:
        client.redis.delete(*keys.queue_lists(queue), keys.queue_groups(queue))
        client.close()


def test_sigkill_mid_group_a_second_worker_reruns_only_the_unfinished_jobs(relay, reference):  # noqa: F811
    client = relay.client
    params = [SamplingParams(max_tokens=n, seed=40 + n, temperature=0.9, ignore_eos=True)
              for n in (2, 40, 40)]
    jobs = [Job(prompt=f"crash {k}", params=p) for k, p in enumerate(params)]
    handles = client.submit_many(jobs, group_size=3)
    seen: list[list] = [[] for _ in jobs]
    readers = [threading.Thread(target=lambda k=k: seen[k].extend(handles[k].stream(timeout_s=60)))
               for k in range(3)]
    for reader in readers:
        reader.start()
    wait_for(lambda: read_log(client.redis, jobs[0].id)[-1].type == "done"
             and all(sum(e.type == "tokens" for e in read_log(client.redis, j.id)) >= 3 for j in jobs[1:]),
             what="the short job's end and three chunks of the long ones")
    relay.first.kill()
    short_log = read_log(client.redis, jobs[0].id)
    second = relay.start_second()
    for reader in readers:
        reader.join(45)
    assert not any(reader.is_alive() for reader in readers)
    assert seen[0] == short_log and seqs(jobs[0].id, client) == [e.seq for e in short_log]
    for k in (1, 2):
        assert [e.seq for e in seen[k]] == list(range(1, len(seen[k]) + 1))
        started = [(e.type, e.attempt) for e in seen[k] if e.type == "started"]
        assert started == [("started", 1), ("started", 2)]
        ids, text, reason = reference(f"crash {k}", params[k])
        assert [i for e in seen[k] if e.type == "tokens" for i in e.ids] == ids
        assert (seen[k][-1].type, seen[k][-1].finish_reason) == ("done", reason)
    assert len(received_groups(second.log)) == 1


def test_concurrent_submits_from_threads_finish_like_lone_jobs(tiny_model, reference, tmp_path):  # noqa: F811
    queue = workers.unique_queue("threads")  # Client.submit's group commit may put them in group messages
    worker = workers.WorkerProcess(tiny_model, queue, tmp_path / "worker.log", max_batch=8, concurrency=8,
                                   chunk_ms=10).wait_ready()
    client = client_for(tiny_model, queue)
    params = [SamplingParams(max_tokens=4 + i % 3, seed=500 + i, temperature=0.8, ignore_eos=True)
              for i in range(12)]
    handles: list = [None] * 12
    start = threading.Barrier(12)

    def submit(i: int) -> None:
        start.wait()
        handles[i] = client.submit(Job(prompt=f"threaded {i}", params=params[i]))

    try:
        threads = [threading.Thread(target=submit, args=(i,)) for i in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        results = [h.result(timeout_s=30) for h in handles]
    finally:
        worker.stop()
        client.close()
    assert_as_reference(reference, [f"threaded {i}" for i in range(12)], params, results)
    assert client.queue_depth(queue) == 0
