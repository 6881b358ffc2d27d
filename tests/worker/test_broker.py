"""worker.broker: one client per channel instead of one per operation; messages enqueued into a pipeline.
Against the real Redis (db 15, flushed around each test)."""

from __future__ import annotations

import json

import pytest
import redis

from worker.app import make_app
from worker.broker import Channel, enqueue_into
from worker.settings import load_settings

URL = "redis://127.0.0.1:6379/15"


@pytest.fixture
def app():
    client = redis.Redis.from_url(URL)
    client.flushdb()
    yield make_app(load_settings(redis_url=URL, model="/tmp/m.gguf"))
    client.flushdb()
    client.close()


def test_a_channel_keeps_one_sync_client(app):
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        assert isinstance(channel, Channel)
        first = channel._create_client()
        assert channel._create_client() is first
        with channel.conn_or_acquire() as client:
            assert client is first
        assert channel._create_client(asynchronous=True) is not first  # the consumer's own


def test_messages_sent_inside_enqueue_into_travel_with_the_pipeline(app):
    client = redis.Redis.from_url(URL)
    pipe = client.pipeline(transaction=True)
    pipe.set("before", 1)
    with enqueue_into(pipe):
        app.send_task("orcd.generate", args=[{"id": "j1"}], queue="orcd.q", priority=3, task_id="j1")
    assert client.llen("orcd.q:3") == 0  # not sent yet
    pipe.execute()
    [raw] = client.lrange("orcd.q:3", 0, -1)
    message = json.loads(raw)
    assert message["headers"]["id"] == "j1" and message["properties"]["priority"] == 3
    app.send_task("orcd.generate", args=[{"id": "j2"}], queue="orcd.q", task_id="j2")  # outside: sent
    assert client.llen("orcd.q") == 1
    client.close()


def consuming(conn, queue: str, prefetch: int, read_batch: int | None = None, callback=None):
    """The connection's channel consuming `queue` with `prefetch`; the delivered messages' list."""
    channel = conn.default_channel
    if read_batch is not None:
        channel.read_batch = read_batch
    channel.basic_qos(prefetch_count=prefetch)
    got = []
    channel.basic_consume(queue, no_ack=False, callback=callback or got.append, consumer_tag="t")
    return channel, got


def read_once(conn) -> None:
    """One BRPOP and what it delivers (kombu's poller, as in a worker)."""
    conn.drain_events(timeout=2)


def send(app, queue: str, ids: list[str], priority: int = 0) -> None:
    for job_id in ids:
        app.send_task("orcd.generate", args=[{"id": job_id}], queue=queue, priority=priority, task_id=job_id)


def unacked(client) -> set[str]:
    tags = {tag.decode() for tag in client.hkeys("unacked")}
    assert tags == {tag.decode() for tag in client.zrange("unacked_index", 0, -1)}
    return tags


def test_one_brpop_takes_up_to_read_batch_messages_in_priority_order_recorded_unacked(app):
    client = redis.Redis.from_url(URL)
    send(app, "orcd.q", [f"low{k}" for k in range(20)], priority=5)
    send(app, "orcd.q", ["high0", "high1"], priority=1)
    with app.connection_for_read() as conn:
        channel, got = consuming(conn, "orcd.q", prefetch=100)
        read_once(conn)
        assert [m.headers["id"] for m in got] == ["high0", "high1"] + [f"low{k}" for k in range(14)]
        assert unacked(client) == {m.delivery_tag for m in got}
        assert client.llen("orcd.q:5") == 6 and client.llen("orcd.q:1") == 0
        assert channel.qos.recorded == set() and len(channel.qos._delivered) == 16
        for message in got:  # an ack removes what the take wrote, as for a message kombu took
            channel.basic_ack(message.delivery_tag)
        assert unacked(client) == set()
    client.close()


def test_a_take_stays_within_the_prefetch_credit(app):
    client = redis.Redis.from_url(URL)
    send(app, "orcd.q", [f"j{k}" for k in range(10)])
    with app.connection_for_read() as conn:
        channel, got = consuming(conn, "orcd.q", prefetch=4)
        read_once(conn)
        assert [m.headers["id"] for m in got] == ["j0", "j1", "j2", "j3"]
        assert not channel.qos.can_consume() and client.llen("orcd.q") == 6
    client.close()


def test_read_batch_1_is_kombus_one_message_per_brpop(app):
    client = redis.Redis.from_url(URL)
    send(app, "orcd.q", ["a", "b"])
    with app.connection_for_read() as conn:
        channel, got = consuming(conn, "orcd.q", prefetch=10, read_batch=1)
        read_once(conn)
        assert [m.headers["id"] for m in got] == ["a"] and unacked(client) == {got[0].delivery_tag}
    client.close()


def test_a_taken_message_restores_like_one_kombu_took(app):
    """The script's unacked entry ([payload, exchange, routing key]) is what a restore re-publishes."""
    client = redis.Redis.from_url(URL)
    send(app, "orcd.q", ["first", "second"], priority=2)
    [original] = [json.loads(raw) for raw in client.lrange("orcd.q:2", 0, 0)]  # "second" (LPUSH)
    with app.connection_for_read() as conn:
        channel, got = consuming(conn, "orcd.q", prefetch=10)
        read_once(conn)
        assert [m.headers["id"] for m in got] == ["first", "second"]
        channel.qos.restore_by_tag(got[1].delivery_tag)  # what the visibility timeout does
        [restored] = [json.loads(raw) for raw in client.lrange("orcd.q:2", 0, -1)]
        assert unacked(client) == {got[0].delivery_tag}
    original["headers"]["redelivered"] = original["properties"]["delivery_info"]["redelivered"] = True
    assert restored == original
    client.close()


def test_a_payload_that_is_not_a_kombu_message_ends_the_take_and_stays_in_line(app):
    client = redis.Redis.from_url(URL)
    send(app, "orcd.q", ["a", "b"])
    client.lpush("orcd.q", b"not json")  # behind a and b
    send(app, "orcd.q", ["c"])
    with app.connection_for_read() as conn:
        channel, got = consuming(conn, "orcd.q", prefetch=10)
        read_once(conn)
        assert [m.headers["id"] for m in got] == ["a", "b"]
        assert client.lrange("orcd.q", -1, -1) == [b"not json"] and client.llen("orcd.q") == 2
    client.close()


def test_when_delivering_a_taken_message_fails_the_rest_go_back_to_the_front(app):
    client = redis.Redis.from_url(URL)
    send(app, "orcd.q", ["a", "b", "c", "d"])
    got = []

    def callback(message):
        if message.headers["id"] == "b":
            raise RuntimeError("consumer failed")
        got.append(message)

    with app.connection_for_read() as conn:
        channel, _ = consuming(conn, "orcd.q", prefetch=10, callback=callback)
        with pytest.raises(RuntimeError, match="consumer failed"):
            read_once(conn)
        assert [m.headers["id"] for m in got] == ["a"]
        assert [json.loads(raw)["headers"]["id"] for raw in client.lrange("orcd.q", 0, -1)] == ["d", "c"]
        assert unacked(client) == set(channel.qos._delivered) and len(unacked(client)) == 2  # a, b: as kombu
        assert channel.qos.recorded == set()  # leaves a message whose callback failed
        read_once(conn)
        assert [m.headers["id"] for m in got] == ["a", "c", "d"]  # c next in line
    client.close()
