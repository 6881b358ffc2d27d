"""worker.enqueue through Client.submit_many over fakeredis: groups, all-or-nothing checks, depth in jobs."""

from __future__ import annotations

import fakeredis
import pytest

from worker import keys
from worker.client import Client
from worker.enqueue import even_chunks
from worker.errors import InvalidJob, QueueFull
from worker.schemas import Job
from worker.settings import load_settings
from worker.streams import read_log


@pytest.fixture
def setup():
    sent: list[tuple] = []
    settings = load_settings(redis_url="redis://unused", model="tiny", max_queue=10, max_batch=4)
    redis = fakeredis.FakeRedis()

    def send(kind: str, jobs, queue: str, priority: int, *group: str) -> None:
        sent.append((kind, queue, priority, [job.id for job in jobs], *group))
        redis.rpush(queue, b"message")  # as Celery's would, one per message

    client = Client(settings=settings, redis=redis, sender=lambda job, *a: send("one", [job], *a),
                    group_sender=lambda *a: send("group", *a))
    return client, sent


def test_even_chunks():
    assert [len(c) for c in even_chunks(range(10), 4)] == [4, 3, 3]
    assert [len(c) for c in even_chunks(range(64), 64)] == [64]
    assert [len(c) for c in even_chunks(range(70), 64)] == [35, 35]
    assert [list(c) for c in even_chunks(range(5), 2)] == [[0, 1], [2, 3], [4]]
    assert even_chunks([], 8) == []


def test_submit_many_sends_groups_per_priority_and_records_every_job(setup):
    client, sent = setup
    jobs = [Job(id=f"j{k}", prompt="hi", priority=9 if k < 6 else 5) for k in range(7)]
    handles = client.submit_many(jobs)
    assert [h.id for h in handles] == [f"j{k}" for k in range(7)]
    assert [s[:4] for s in sent] == [("group", "orcd.tiny", 0, ["j0", "j1", "j2"]),
                                     ("group", "orcd.tiny", 0, ["j3", "j4", "j5"]),
                                     ("one", "orcd.tiny", 4, ["j6"])]  # max_batch 4: 6 jobs in 2 groups
    for job in jobs:
        [queued] = read_log(client.redis, job.id)
        assert (queued.type, queued.seq, queued.queue, queued.priority) == ("queued", 1, "orcd.tiny",
                                                                            job.priority)
        assert client.status(job.id)["status"] == "queued"
    groups = client.redis.hgetall(keys.queue_groups("orcd.tiny"))
    assert groups == {sent[0][4].encode(): b"3", sent[1][4].encode(): b"3"}


def test_an_invalid_job_is_named_by_its_index_and_nothing_is_written(setup):
    client, sent = setup
    with pytest.raises(InvalidJob, match=r"(?s)invalid job 1: .*params.temperature"):
        client.submit_many([Job(prompt="ok"), {"prompt": "bad", "params": {"temperature": -1}}])
    with pytest.raises(InvalidJob, match=r"job 2: job id 'a' is also job 0's"):
        client.submit_many([Job(id="a", prompt="x"), Job(id="b", prompt="x"), Job(id="a", prompt="y")])
    assert sent == [] and client.redis.keys("*") == []


def test_an_id_in_use_refuses_them_all_and_releases_the_claims(setup):
    client, sent = setup
    client.submit(Job(id="taken", prompt="x"))
    sent.clear()
    with pytest.raises(InvalidJob, match=r"job 1: job id 'taken' is already in use"):
        client.submit_many([Job(id="free", prompt="x"), Job(id="taken", prompt="y")])
    assert sent == [] and not client.redis.exists(keys.job_meta("free"))
    assert [e.seq for e in read_log(client.redis, "taken")] == [1]


def test_queue_full_counts_the_jobs_of_group_messages(setup):
    client, sent = setup
    client.redis.rpush("orcd.tiny", b"lone", b"group-message")
    client.redis.hset(keys.queue_groups("orcd.tiny"), "g1", 5)  # the second message holds 5 jobs
    assert client.queue_depth("orcd.tiny") == 6
    with pytest.raises(QueueFull, match=r"queue 'orcd.tiny' is full \(6 jobs waiting, limit 10\)"):
        client.submit_many([Job(prompt=str(k)) for k in range(5)])
    assert sent == [] and client.redis.keys("orcd:job:*") == []
    client.submit_many([Job(prompt=str(k)) for k in range(4)])
    assert client.queue_depth("orcd.tiny") == 6 + 4  # one group of 4: one message + 3
    with pytest.raises(QueueFull, match=r"\(10 jobs waiting, limit 10\)"):
        client.submit(Job(prompt="one more"))


def test_group_size_follows_the_live_workers(setup):
    client, _ = setup
    assert client.group_size("orcd.tiny") == 4  # no worker seen: settings.max_batch
    for name, batch in (("w1", 16), ("w2", 8)):
        client.redis.hset(keys.worker(name), mapping={"queue": "orcd.tiny", "max_batch": batch})
    client.redis.hset(keys.worker("other"), mapping={"queue": "orcd.else", "max_batch": 2})
    assert client.group_size("orcd.tiny") == 8  # the smallest batch among this queue's workers
    assert client.group_size("orcd.tiny", 10) == 5  # an even share for each of the two workers
    assert client.group_size("orcd.tiny", 64) == 8
