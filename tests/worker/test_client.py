"""Client over fakeredis with a recording sender: validation before enqueue, QueueFull, records."""

from __future__ import annotations

import threading

import fakeredis
import pytest

from tests.worker.waiting import wait_until
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


def held_client(max_queue: int) -> tuple[Client, list[tuple], threading.Event]:
    """A client whose first send waits for the returned event (submits made meanwhile queue up); each
    send is recorded and pushes a stand-in message onto its queue, so depths count it."""
    sent: list[tuple] = []
    release, holding = threading.Event(), threading.Event()
    redis = fakeredis.FakeRedis()

    def send(job, queue, priority):
        if not holding.is_set():
            holding.set()
            release.wait(10)
        sent.append((job, queue, priority))
        redis.rpush(queue, b"message")

    def send_group(jobs, queue, priority, group):
        sent.append((tuple(jobs), queue, priority, group))
        redis.rpush(queue, b"group message")

    settings = load_settings(redis_url="redis://unused", model="tiny", max_queue=max_queue, max_batch=8)
    return Client(settings=settings, redis=redis, sender=send, group_sender=send_group), sent, release


def submit_meanwhile(client: Client, release: threading.Event, ids: list[str]) -> dict[str, list]:
    """Submit `first` and, while its send is held, `ids` from one thread each; {id: [outcome, ...]}."""
    outcomes: dict[str, list] = {}

    def submit(job_id: str) -> None:
        try:
            client.submit(Job(id=job_id, prompt="x"))
            outcomes.setdefault(job_id, []).append("ok")
        except (InvalidJob, QueueFull) as exc:
            outcomes.setdefault(job_id, []).append(exc)

    first = threading.Thread(target=submit, args=("first",))
    first.start()
    threads = [threading.Thread(target=submit, args=(job_id,)) for job_id in ids]
    for t in threads:
        t.start()
    wait_until(lambda: len(client._submits._queued) >= len(ids), timeout_s=10, what="the submits to queue")
    release.set()
    for t in [first, *threads]:
        t.join(10)
    return outcomes


def test_concurrent_submits_go_out_together_each_with_its_own_refusal():
    client, sent, release = held_client(max_queue=100)
    outcomes = submit_meanwhile(client, release, ["j1", "j2", "j3", "j2"])
    assert client._submits.flushes == 2  # the first alone, the four that waited in one transaction
    assert outcomes["first"] == outcomes["j1"] == outcomes["j3"] == ["ok"]
    ok, refused = sorted(outcomes["j2"], key=lambda o: o != "ok")
    assert ok == "ok" and isinstance(refused, InvalidJob) and "job id 'j2' is already in use" in str(refused)
    assert sorted(message[0].id for message in sent) == ["first", "j1", "j2", "j3"]  # each alone
    assert all(client.status(job_id)["status"] == "queued" for job_id in ("first", "j1", "j2", "j3"))


def test_concurrent_submits_go_as_one_group_message():
    client, sent, release = held_client(max_queue=100)
    outcomes = submit_meanwhile(client, release, ["g1", "g2", "g3", "g4"])
    assert all(outcome == ["ok"] for outcome in outcomes.values())
    [(first, _q, _p), (jobs, queue, _priority, group)] = sent
    assert first.id == "first" and sorted(job.id for job in jobs) == ["g1", "g2", "g3", "g4"]
    assert queue == "orcd.tiny" and group.startswith("group-")
    assert client.redis.hget(keys.queue_groups("orcd.tiny"), group) == b"4"
    assert client.queue_depth("orcd.tiny") == 5


def test_a_full_queue_refuses_only_the_concurrent_submits_that_do_not_fit():
    client, sent, release = held_client(max_queue=3)
    client.redis.rpush("orcd.tiny", b"waiting")
    outcomes = submit_meanwhile(client, release, ["a", "b"])  # "first" makes 2 waiting: one more fits
    assert outcomes["first"] == ["ok"]
    assert sorted(map(str, outcomes["a"] + outcomes["b"])) == [
        "ok", "queue 'orcd.tiny' is full (3 jobs waiting, limit 3)"]
    assert len(sent) == 2
