"""The Celery app: a Redis broker, late acks, one queue per model, ten priority steps.

Why these settings (docs/queue.md): `task_acks_late` + `task_reject_on_worker_lost` leave a job's
message unacknowledged until its last event is in Redis, so a worker that dies mid-job has its job
redelivered after `visibility_timeout`; `worker_prefetch_multiplier=1` keeps a worker from hoarding
jobs it cannot start; results travel as events, never through Celery's result backend.
Workers use the threads pool: the engine and its CUDA context live in one process, and CUDA must
not meet fork (a prefork child inherits a CUDA context it cannot use).

redis-py 8 looks its own version up in the installed packages' metadata every time it makes a client
or a connection (~1 ms here, more on a long sys.path), and kombu's Redis transport makes a client for
each publish and each acknowledgement: `cache_redis_lib_version` (run on import) memoises the lookup.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

import redis.utils
from celery import Celery

from . import keys
from .broker import TRANSPORT
from .errors import SettingsError
from .pool import POOL
from .settings import Settings

logger = logging.getLogger(__name__)


def cache_redis_lib_version() -> None:
    """Memoise `redis.utils.get_lib_version` (an importlib.metadata lookup per client and connection)."""
    lookup = getattr(redis.utils, "get_lib_version", None)
    if lookup is not None and not hasattr(lookup, "cache_info"):
        redis.utils.get_lib_version = functools.cache(lookup)


cache_redis_lib_version()


def transport_options(settings: Settings) -> dict[str, Any]:
    return {
        "visibility_timeout": settings.visibility_timeout_s,
        "priority_steps": list(keys.PRIORITY_STEPS),
        "sep": keys.PRIORITY_SEP,
        "queue_order_strategy": "priority",
        "unacked_restore_interval": max(1, round(settings.restore_interval_s)),
        "unacked_restore_throttle": 1,  # scan on every sweep: the interval alone sets the pace
    }


def make_app(settings: Settings) -> Celery:
    """A Celery app for `settings.redis_url` (clients and workers build it the same way)."""
    if not settings.redis_url:
        raise SettingsError("no Redis URL: set ORCD_REDIS_URL or --redis-url (or use the embedded server)")
    app = Celery("orcd", broker=settings.redis_url, set_as_current=False)
    if settings.redis_url.startswith("redis://"):  # other schemes (TLS, sockets) keep kombu's own
        app.conf.broker_transport = TRANSPORT
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        task_default_queue=settings.queue_name,
        task_create_missing_queues=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options(settings),
    )
    return app


def worker_options(settings: Settings, name: str) -> dict[str, Any]:
    """Options of the WorkController consuming the settings' queue on the threads pool."""
    return dict(pool=POOL, concurrency=settings.worker_concurrency, queues=[settings.queue_name],
                hostname=f"{name}", prefetch_multiplier=1, optimization="fair", without_mingle=True,
                without_gossip=True, without_heartbeat=True)


class WorkerThread:
    """A Celery worker consuming in a background thread of this process (embedded mode, tests)."""

    def __init__(self, app: Celery, settings: Settings, name: str) -> None:
        app.finalize()
        self.controller = app.WorkController(app=app, loglevel="WARNING", logfile=None, ready_callback=None,
                                             **worker_options(settings, name))
        self.thread = threading.Thread(target=self.controller.start, name="orcd-celery", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        from celery.worker import state

        state.should_terminate = 0
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            logger.warning("in-process Celery worker did not stop within %.0f s", timeout_s)
        state.should_terminate = None
