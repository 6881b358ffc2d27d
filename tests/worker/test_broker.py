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
