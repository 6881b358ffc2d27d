"""Celery's Redis transport (kombu's), with less work per message, and a way to enqueue inside our pipeline.

kombu's Redis channel builds a new `redis.Redis` client object for every operation that is not the
consumer's BRPOP: each publish, each message taken (the unacked bookkeeping, on the consumer thread,
before the next BRPOP is sent) and each acknowledgement. Here the channel keeps one synchronous client
over its connection pool (redis-py clients are thread-safe: each command takes a connection from the
pool), so a message costs its round trips and no object building.

`enqueue_into(pipe)`: while it is active in a thread, Celery messages published by that thread are not
sent but added to `pipe` (kombu's own publish-batch hook, so the key and payload are kombu's), and go
out with the other commands of that pipeline: the client writes a job's record, its `queued` event and
its Celery message in one round trip (worker/client.py).

`TRANSPORT` is this transport's import path, for Celery's `broker_transport` (worker/app.py).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

from kombu.transport import redis as kombu_redis

TRANSPORT = "worker.broker:Transport"

_pipeline: contextvars.ContextVar[Any] = contextvars.ContextVar("orcd_enqueue_into", default=None)


class _PipelineBatch:
    """kombu's publish-batch interface (`add(command, *args)`) over a redis-py pipeline."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe

    def add(self, name: str, *args: Any) -> None:
        getattr(self.pipe, name)(*args)


@contextlib.contextmanager
def enqueue_into(pipe: Any) -> Iterator[None]:
    """Messages published by this thread meanwhile are added to `pipe` instead of sent."""
    token = _pipeline.set(pipe)
    try:
        yield
    finally:
        _pipeline.reset(token)


class Channel(kombu_redis.Channel):
    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the consumer's BRPOP client: kombu already keeps one
            return super()._create_client(asynchronous=True)
        client = self._sync_client
        if client is None or client.connection_pool is not self.pool:  # a closed channel drops its pool
            client = self._sync_client = super()._create_client()
        return client

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        pipe = _pipeline.get()
        if pipe is not None and kwargs.get("_publish_batch") is None:
            kwargs["_publish_batch"] = _PipelineBatch(pipe)
        super()._put(queue, message, **kwargs)


class Transport(kombu_redis.Transport):
    Channel = Channel
