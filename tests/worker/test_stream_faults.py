"""Faults on the reading side: a log that lost its head ends with `StreamGap`; an unreachable Redis
is `BrokerUnavailable` at submit; a stream whose connection drops reconnects and resumes after its
last seq (every event once), or raises `BrokerUnavailable` after `reconnect_s`."""

from __future__ import annotations

import asyncio
import threading
import time

import fakeredis
import pytest

from worker import keys
from worker.client import Client
from worker.errors import BrokerUnavailable, StreamGap
from worker.schemas import Done, Job, Queued, SamplingParams, Started, Tokens, Usage
from worker.settings import Settings
from worker.streams import afollow, append_events, follow

pytestmark = pytest.mark.timeout(30)


def events(job_id: str = "j") -> list:
    """seqs 1..6: queued, started, 3 token chunks, done."""
    out = [Queued(job_id=job_id, seq=1, model="m", queue="orcd.m", priority=5),
           Started(job_id=job_id, seq=2, worker="w", queue_ms=1.0)]
    out += [Tokens(job_id=job_id, seq=3 + k, index=k, ids=[k], text=f"<{k}>") for k in range(3)]
    return out + [Done(job_id=job_id, seq=6, finish_reason="length",
                       usage=Usage(prompt_tokens=1, completion_tokens=3))]


def write(client, evs) -> None:
    append_events(client, evs, live_ttl_s=100, result_ttl_s=100)


def test_a_log_without_its_head_is_a_stream_gap_at_once():
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    write(client, events()[3:])  # Redis restarted empty; the worker published seq 4.. into it
    t0 = time.monotonic()
    with pytest.raises(StreamGap) as info:
        list(follow(client, "j", poll_s=30.0))
    assert time.monotonic() - t0 < 1.0
    assert (info.value.job_id, info.value.first_missing, info.value.next_seq) == ("j", 1, 4)
    assert str(info.value).startswith("job j: events seq 1-3 are lost from its log (it resumes at seq 4;")

    async def main():
        reader = fakeredis.FakeAsyncRedis(server=server)
        try:
            return [e async for e in afollow(reader, "j", poll_s=30.0)]
        finally:
            await reader.aclose()

    with pytest.raises(StreamGap, match="job j: events seq 1-3 are lost"):
        asyncio.run(main())
    assert [e.seq for e in follow(client, "j", after=3)] == [4, 5, 6]  # past the hole: fine


def test_a_hole_seen_live_is_a_stream_gap():
    client = fakeredis.FakeRedis()
    evs = events()
    write(client, evs[:2])
    got = []

    def restart_without_persistence():
        time.sleep(0.2)
        client.delete(keys.job_events("j"))  # the server lost the log; the worker goes on at seq 5
        write(client, evs[4:])

    thread = threading.Thread(target=restart_without_persistence)
    thread.start()
    with pytest.raises(StreamGap, match="job j: events seq 3-4 are lost"):
        for event in follow(client, "j", poll_s=30.0):
            got.append(event.seq)
    thread.join()
    assert got == [1, 2]


def client_on(server: fakeredis.FakeServer, reconnect_s: float) -> Client:
    settings = Settings(redis_url="redis://fake:6379/0", model="m")
    return Client(settings=settings, redis=fakeredis.FakeRedis(server=server),
                  sender=lambda job, queue, priority: None, reconnect_s=reconnect_s)


def test_submit_to_an_unreachable_redis_is_broker_unavailable():
    server = fakeredis.FakeServer()
    server.connected = False
    client = client_on(server, 1.0)
    job = Job(id="j1", prompt="hi", params=SamplingParams(max_tokens=2))
    with pytest.raises(BrokerUnavailable) as info:
        client.submit(job)
    assert str(info.value) == ("job j1: submit: Redis does not answer: "
                               "FakeRedis is emulating a connection error.")
    with pytest.raises(BrokerUnavailable, match="job j1: status: Redis does not answer"):
        client.status("j1")


def test_the_gateway_answers_503_for_the_clients_broker_unavailable():
    from worker.gateway_errors import BrokerUnavailable as GatewayBrokerUnavailable
    from worker.gateway_redis import RedisBackend

    def submit():
        raise BrokerUnavailable("job j1: submit: Redis does not answer")

    backend = RedisBackend.__new__(RedisBackend)  # _call needs no connection
    with pytest.raises(GatewayBrokerUnavailable) as info:
        asyncio.run(backend._call(submit))
    assert info.value.status == 503
    assert "job j1: submit: Redis does not answer" in str(info.value)


def test_stream_reconnects_and_resumes_after_its_last_seq():
    server = fakeredis.FakeServer()
    evs = events()
    write(fakeredis.FakeRedis(server=server), evs[:3])
    client = client_on(server, 5.0)
    got = []
    for event in client.stream("j"):
        got.append(event.seq)
        if event.seq == 3:  # Redis goes away for 0.4 s; the worker publishes the rest once it is back
            server.connected = False

            def back():
                time.sleep(0.4)
                server.connected = True
                write(fakeredis.FakeRedis(server=server), evs[3:])

            threading.Thread(target=back).start()
    assert got == [1, 2, 3, 4, 5, 6]


def test_astream_reconnects_and_resumes_after_its_last_seq(monkeypatch):
    server = fakeredis.FakeServer()
    evs = events()
    write(fakeredis.FakeRedis(server=server), evs[:3])
    client = client_on(server, 5.0)
    monkeypatch.setattr("redis.asyncio.Redis.from_url",
                        lambda url, **kwargs: fakeredis.FakeAsyncRedis(server=server))

    async def main():
        got = []
        async for event in client.astream("j"):
            got.append(event.seq)
            if event.seq == 3:
                server.connected = False

                async def back():
                    await asyncio.sleep(0.4)
                    server.connected = True
                    write(fakeredis.FakeRedis(server=server), evs[3:])

                task = asyncio.create_task(back())
        await task
        return got

    assert asyncio.run(main()) == [1, 2, 3, 4, 5, 6]


def test_stream_gives_up_after_reconnect_s():
    server = fakeredis.FakeServer()
    write(fakeredis.FakeRedis(server=server), events()[:2])
    client = client_on(server, 0.5)
    got = []
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable) as info:
        for event in client.stream("j"):
            got.append(event.seq)
            server.connected = False
    assert got == [1, 2]  # the replayed backlog; nothing after it can be read
    assert 0.5 <= time.monotonic() - t0 < 2.0
    assert str(info.value) == ("job j: Redis did not answer for 0.5 s (stream stopped after seq 2): "
                               "FakeRedis is emulating a connection error.")
