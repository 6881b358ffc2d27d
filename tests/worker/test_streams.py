"""The job log: append-once by seq, publish only what was appended, replay + follow without gaps."""

from __future__ import annotations

import threading
import time

import fakeredis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker import keys
from worker.errors import JobNotFound, JobTimeout
from worker.schemas import Done, Queued, Started, Tokens, Usage, parse_event
from worker.streams import LogState, SeqTracker, afollow, append_events, follow, log_state, read_log


def events(job_id: str = "j", n_chunks: int = 3) -> list:
    out = [Queued(job_id=job_id, seq=1, model="m", queue="orcd.m", priority=5),
           Started(job_id=job_id, seq=2, worker="w", queue_ms=1.0)]
    for k in range(n_chunks):
        out.append(Tokens(job_id=job_id, seq=3 + k, index=2 * k, ids=[2 * k, 2 * k + 1], text=f"<{k}>"))
    out.append(Done(job_id=job_id, seq=3 + n_chunks, finish_reason="length",
                    usage=Usage(prompt_tokens=4, completion_tokens=2 * n_chunks)))
    return out


def write(client, evs) -> list[bool]:
    return append_events(client, evs, live_ttl_s=100, result_ttl_s=10)


def test_append_refuses_a_seq_already_in_the_log_and_does_not_republish_it():
    client = fakeredis.FakeRedis()
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.job_channel("j"))
    evs = events()
    assert write(client, evs[:3]) == [True, True, True]
    assert write(client, evs[2:4]) == [False, True]
    published = []
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.05)
        if message is not None:
            published.append(parse_event(message["data"]).seq)
    assert published == [1, 2, 3, 4]
    assert [e.seq for e in read_log(client, "j")] == [1, 2, 3, 4]
    assert client.hget(keys.job_meta("j"), "status") == b"running"
    assert 90 < client.ttl(keys.job_events("j")) <= 100


def test_log_state_counts_tokens_and_attempts():
    evs = events(n_chunks=2)
    assert log_state(evs[:4]) == LogState(last_seq=4, tokens_done=4, ended=False, started=1)
    state = log_state(evs)
    assert (state.last_seq, state.tokens_done, state.ended) == (5, 4, True)
    client = fakeredis.FakeRedis()
    write(client, evs)
    assert client.hget(keys.job_meta("j"), "status") == b"done"
    assert 0 < client.ttl(keys.job_events("j")) <= 10
    assert read_log(client, "j", after=3) == evs[3:]


@given(st.lists(st.integers(1, 6), max_size=40))
def test_tracker_passes_each_seq_once_in_order(arrivals):
    tracker = SeqTracker(after=0)
    evs = events(n_chunks=3)  # seqs 1..6
    delivered = []
    for seq in arrivals:
        verdict = tracker.accept(evs[seq - 1])
        if verdict == "next":
            delivered.append(seq)
        else:
            assert verdict == ("duplicate" if seq <= tracker.last else "gap")
    assert delivered == list(range(1, len(delivered) + 1))


def test_follow_replays_then_follows_live():
    client = fakeredis.FakeRedis()
    evs = events(n_chunks=4)
    write(client, evs[:4])  # already there when the reader attaches

    def later():
        time.sleep(0.2)
        for event in evs[4:]:
            write(client, [event])
            time.sleep(0.01)

    thread = threading.Thread(target=later)
    thread.start()
    got = list(follow(client, "j", timeout_s=5.0, poll_s=0.05))
    thread.join()
    assert got == evs


def test_follow_fills_a_gap_from_the_log():
    client = fakeredis.FakeRedis()
    evs = events(n_chunks=2)
    write(client, evs[:2])
    # seq 3 lands in the log without reaching the channel (a dropped message), then 4, 5 go out
    client.xadd(keys.job_events("j"), {"data": evs[2].model_dump_json()}, id="0-3")

    def later():
        time.sleep(0.2)
        write(client, evs[3:])

    thread = threading.Thread(target=later)
    thread.start()
    got = list(follow(client, "j", after=1, timeout_s=5.0, poll_s=10.0))
    thread.join()
    assert [e.seq for e in got] == [2, 3, 4, 5]


def test_follow_unknown_job_and_timeout():
    client = fakeredis.FakeRedis()
    with pytest.raises(JobNotFound, match="job nope not found"):
        list(follow(client, "nope"))
    write(client, events()[:2])
    with pytest.raises(JobTimeout, match="job j: no event for 0.2 s after seq 2"):
        list(follow(client, "j", timeout_s=0.2, poll_s=0.05))


def test_afollow_replays_then_follows_live():
    import asyncio

    server = fakeredis.FakeServer()
    writer = fakeredis.FakeRedis(server=server)
    evs = events(n_chunks=3)
    write(writer, evs[:3])

    async def main():
        reader = fakeredis.FakeAsyncRedis(server=server)

        async def later():
            await asyncio.sleep(0.2)
            for event in evs[3:]:
                write(writer, [event])

        task = asyncio.create_task(later())
        got = [e async for e in afollow(reader, "j", after=1, timeout_s=5.0, poll_s=0.05)]
        await task
        await reader.aclose()
        return got

    assert asyncio.run(main()) == evs[1:]


def resume_points(evs) -> list[int]:
    """Where a reader may resume once the job has ended: at its done event, or past it."""
    return [evs[-1].seq, evs[-1].seq + 3]


def check_resume_after_the_end_is_immediate(make_sync, make_async) -> None:
    """follow and afollow yield nothing and return at once (poll_s 30 would show any wait)."""
    import asyncio

    evs = events(n_chunks=2)  # seqs 1..5, done at 5
    write(make_sync(), evs)
    for after in resume_points(evs):
        t0 = time.monotonic()
        assert list(follow(make_sync(), "j", after=after, poll_s=30.0)) == []
        assert time.monotonic() - t0 < 1.0

        async def main(after=after):
            reader = make_async()
            try:
                return [e async for e in afollow(reader, "j", after=after, poll_s=30.0)]
            finally:
                await reader.aclose()

        t0 = time.monotonic()
        assert asyncio.run(main()) == []
        assert time.monotonic() - t0 < 1.0
    # one before the end still gets the end, then stops
    assert [e.seq for e in follow(make_sync(), "j", after=4, poll_s=30.0)] == [5]


@pytest.mark.timeout(20)
def test_resume_after_the_end_returns_at_once_fakeredis():
    server = fakeredis.FakeServer()
    check_resume_after_the_end_is_immediate(lambda: fakeredis.FakeRedis(server=server),
                                            lambda: fakeredis.FakeAsyncRedis(server=server))


@pytest.mark.integration
@pytest.mark.timeout(20)
def test_resume_after_the_end_returns_at_once_real_redis(redis_url):
    import redis
    import redis.asyncio as aredis

    check_resume_after_the_end_is_immediate(lambda: redis.Redis.from_url(redis_url),
                                            lambda: aredis.Redis.from_url(redis_url))


@pytest.mark.timeout(20)
def test_resume_of_a_job_that_has_not_ended_keeps_following_and_unknown_resume_is_not_found():
    import asyncio

    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    evs = events(n_chunks=2)
    write(client, evs[:4])
    with pytest.raises(JobTimeout, match="job j: no event for 0.2 s after seq 4"):
        list(follow(client, "j", after=4, timeout_s=0.2, poll_s=0.05))
    with pytest.raises(JobNotFound, match="job gone not found"):
        list(follow(client, "gone", after=7, poll_s=30.0))

    async def main():
        reader = fakeredis.FakeAsyncRedis(server=server)
        try:
            with pytest.raises(JobNotFound, match="job gone not found"):
                [e async for e in afollow(reader, "gone", after=7, poll_s=30.0)]
            with pytest.raises(JobTimeout, match="job j: no event for 0.2 s after seq 4"):
                [e async for e in afollow(reader, "j", after=4, timeout_s=0.2, poll_s=0.05)]
        finally:
            await reader.aclose()

    asyncio.run(main())
