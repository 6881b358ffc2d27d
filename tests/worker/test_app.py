"""worker.app: the Celery app's settings, and redis-py's version lookup memoised."""

from __future__ import annotations

import importlib.metadata

import redis

import worker.app
from worker.settings import load_settings


def test_redis_version_is_looked_up_once(monkeypatch):
    lookups = []
    real = importlib.metadata.version

    def counting(name: str) -> str:
        lookups.append(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", counting)
    monkeypatch.setattr(redis.utils, "get_lib_version", redis.utils.get_lib_version.__wrapped__)
    worker.app.cache_redis_lib_version()
    for _ in range(5):  # every client (kombu makes one per publish and per ack) and connection
        redis.Redis(host="127.0.0.1", port=1).connection_pool.make_connection()
    assert lookups == ["redis"]
    assert redis.utils.get_lib_version() == real("redis")


def test_app_settings():
    app = worker.app.make_app(load_settings(redis_url="redis://127.0.0.1:6379/0", model="/tmp/m.gguf"))
    assert app.conf.task_acks_late and app.conf.worker_prefetch_multiplier == 1
    assert app.conf.broker_transport_options["queue_order_strategy"] == "priority"
