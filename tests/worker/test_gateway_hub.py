"""The gateway's shared subscriber on the real Redis (db 13): replay then live, duplicates dropped,
gaps and lost messages filled from the log, one channel subscription per job however many readers."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aredis

from worker import keys
from worker.errors import JobNotFound
from worker.gateway_hub import EventHub
from worker.schemas import Done, Queued, Tokens, Usage
from worker.streams import append_events

REDIS_URL = "redis://127.0.0.1:6379/13"
TTL = {"live_ttl_s": 60, "result_ttl_s": 60}


@pytest.fixture
def sync():
    conn = redis.Redis.from_url(REDIS_URL)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


def queued(job_id: str) -> Queued:
    return Queued(job_id=job_id, seq=1, model="m", queue="orcd.m", priority=5)


def tokens(job_id: str, seq: int) -> Tokens:
    return Tokens(job_id=job_id, seq=seq, index=seq - 2, ids=[seq], text=f"<{seq}>")


def done(job_id: str, seq: int) -> Done:
    return Done(
        job_id=job_id, seq=seq, finish_reason="length", usage=Usage(prompt_tokens=1, completion_tokens=1)
    )


async def collect(hub: EventHub, job_id: str, after: int = 0) -> list[int]:
    return [event.seq async for event in hub.follow(job_id, after)]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=20))


def test_replay_then_live_with_duplicates_and_gaps(sync):
    async def scenario() -> list[int]:
        conn = aredis.Redis.from_url(REDIS_URL)
        hub = EventHub(conn, poll_s=0.2)
        append_events(sync, [queued("j1"), tokens("j1", 2)], **TTL)  # before the reader: replayed
        reader = asyncio.create_task(collect(hub, "j1"))
        await asyncio.sleep(0.1)
        append_events(sync, [tokens("j1", 3)], **TTL)
        sync.publish(keys.job_channel("j1"), tokens("j1", 3).model_dump_json())  # a duplicate
        sync.xadd(
            keys.job_events("j1"), {"data": tokens("j1", 4).model_dump_json()}, id="0-4"
        )  # never published
        append_events(
            sync, [tokens("j1", 5), done("j1", 6)], **TTL
        )  # 5 arrives first: a gap, read from the log
        seqs = await reader
        await hub.close()
        await conn.aclose()
        return seqs

    assert run(scenario()) == [1, 2, 3, 4, 5, 6]


def test_silence_is_filled_from_the_log(sync):
    """Events written to the log without any publish still reach the reader (poll after silence)."""

    async def scenario() -> list[int]:
        conn = aredis.Redis.from_url(REDIS_URL)
        hub = EventHub(conn, poll_s=0.1)
        append_events(sync, [queued("j2")], **TTL)
        reader = asyncio.create_task(collect(hub, "j2"))
        await asyncio.sleep(0.05)
        for event in (tokens("j2", 2), done("j2", 3)):
            sync.xadd(keys.job_events("j2"), {"data": event.model_dump_json()}, id=f"0-{event.seq}")
        seqs = await reader
        await hub.close()
        await conn.aclose()
        return seqs

    assert run(scenario()) == [1, 2, 3]


def test_many_readers_share_one_subscription_per_job(sync):
    async def scenario() -> tuple[list[list[int]], list[int], list[int]]:
        conn = aredis.Redis.from_url(REDIS_URL)
        hub = EventHub(conn, poll_s=5.0)  # long poll: delivery must come from the shared pub/sub
        jobs = [f"m{i}" for i in range(20)]
        for job_id in jobs:
            append_events(sync, [queued(job_id)], **TTL)
        readers = [asyncio.create_task(collect(hub, job_id)) for job_id in jobs for _ in range(2)]
        await asyncio.sleep(0.3)
        subscribed = [n for _channel, n in await conn.pubsub_numsub(*[keys.job_channel(j) for j in jobs])]
        for job_id in jobs:
            append_events(sync, [tokens(job_id, 2), done(job_id, 3)], **TTL)
        seqs = await asyncio.gather(*readers)
        for _ in range(50):  # UNSUBSCRIBE is sent, not awaited: give Redis a moment to apply it
            left = [n for _channel, n in await conn.pubsub_numsub(*[keys.job_channel(j) for j in jobs])]
            if not any(left):
                break
            await asyncio.sleep(0.02)
        await hub.close()
        await conn.aclose()
        return seqs, subscribed, left

    seqs, subscribed, left = run(scenario())
    assert seqs == [[1, 2, 3]] * 40
    assert subscribed == [1] * 20  # two readers per job, one subscription, on one connection
    assert left == [0] * 20  # unsubscribed once the readers finished


def test_unknown_job_and_resume_past_the_end(sync):
    async def scenario() -> list[int]:
        conn = aredis.Redis.from_url(REDIS_URL)
        hub = EventHub(conn, poll_s=0.1)
        with pytest.raises(JobNotFound, match="job nope not found"):
            await collect(hub, "nope")
        append_events(sync, [queued("j3"), done("j3", 2)], **TTL)
        after_end = await collect(hub, "j3", after=2)
        from_one = await collect(hub, "j3", after=1)
        await hub.close()
        await conn.aclose()
        return after_end + from_one

    assert run(scenario()) == [2]
