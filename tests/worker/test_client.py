"""Client over fakeredis with a recording sender: validation before enqueue, QueueFull, records."""

from __future__ import annotations

import fakeredis
import pytest

from worker import keys
from worker.client import Client, assemble
from worker.errors import InvalidJob, JobFailed, JobNotFound, QueueFull
from worker.schemas import Done, Error, Job, Tokens, Usage
from worker.settings import load_settings
from worker.streams import append_events, read_log


@pytest.fixture
def setup():
    sent: list[tuple] = []
    settings = load_settings(redis_url="redis://unused", model="tiny", max_queue=3)
    client = Client(settings=settings, redis=fakeredis.FakeRedis(), sender=lambda *a: sent.append(a))
    return client, sent


def test_submit_records_queued_and_sends(setup):
    client, sent = setup
    handle = client.submit({"id": "j1", "prompt": "hi", "priority": 9, "params": {"max_tokens": 4}})
    job, queue, priority = sent[0]
    assert (handle.id, job.model, queue, priority) == ("j1", "tiny", "orcd.tiny", 0)
    [queued] = read_log(client.redis, "j1")
    assert (queued.type, queued.seq, queued.queue, queued.priority) == ("queued", 1, "orcd.tiny", 9)
    assert client.status("j1")["status"] == "queued"
    assert Job.model_validate_json(client.status("j1")["job"]) == job


def test_invalid_job_raises_before_anything_is_written(setup):
    client, sent = setup
    with pytest.raises(InvalidJob, match="temperature"):
        client.submit({"id": "bad", "prompt": "hi", "params": {"temperature": -1}})
    assert sent == [] and client.redis.keys("*") == []


def test_duplicate_id_is_refused(setup):
    client, sent = setup
    client.submit(Job(id="same", prompt="a"))
    with pytest.raises(InvalidJob, match="job id 'same' is already in use"):
        client.submit(Job(id="same", prompt="b"))
    assert len(sent) == 1


def test_queue_full_when_the_model_queue_is_at_its_limit(setup):
    client, sent = setup
    client.redis.rpush("orcd.tiny", b"m1", b"m2")
    client.redis.rpush("orcd.tiny:4", b"m3")  # another priority step of the same queue
    assert client.queue_depth("orcd.tiny") == 3
    with pytest.raises(QueueFull, match=r"queue 'orcd.tiny' is full \(3 jobs waiting, limit 3\)"):
        client.submit(Job(id="refused", prompt="x"))
    assert sent == [] and not client.redis.exists(keys.job_meta("refused"))


def test_cancel_sets_the_flag_unless_ended(setup):
    client, _ = setup
    with pytest.raises(JobNotFound):
        client.cancel("nope")
    client.submit(Job(id="c1", prompt="x"))
    assert client.cancel("c1") is True
    assert client.redis.get(keys.job_cancel("c1")) == b"1"
    append_events(client.redis, [Done(job_id="c1", seq=2, finish_reason="cancelled",
                                      usage=Usage(prompt_tokens=0, completion_tokens=0))],
                  live_ttl_s=60, result_ttl_s=60)
    assert client.cancel("c1") is False


def test_result_assembles_text_and_ids(setup):
    client, _ = setup
    client.submit(Job(id="r1", prompt="x"))
    append_events(client.redis, [
        Tokens(job_id="r1", seq=2, index=0, ids=[5], text="He"),
        Tokens(job_id="r1", seq=3, index=1, ids=[6, 7], text="llo"),
        Done(job_id="r1", seq=4, finish_reason="stop", usage=Usage(prompt_tokens=1, completion_tokens=3))],
        live_ttl_s=60, result_ttl_s=60)
    result = client.result("r1", timeout_s=2.0)
    assert (result.text, result.token_ids, result.finish_reason) == ("Hello", [5, 6, 7], "stop")
    with pytest.raises(JobFailed, match="job e1 failed: ContextTooLong: too long"):
        assemble("e1", [Error(job_id="e1", seq=1, error_type="ContextTooLong", message="too long")])
