"""`orcd worker`: a Celery worker pinned to one GPU, serving one model's queue.

The model loads (and CUDA_VISIBLE_DEVICES is pinned) before the Celery worker is even created, so it
consumes nothing until it can run it. Pool: threads (CUDA must not meet fork); one scheduler thread
owns the engine, task threads only wait for their job's end. A Celery worker that exits on a broker
failure (not on SIGTERM/SIGINT) is replaced in process once Redis answers again (worker/supervise.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal

from .common import add_model_flags
from .queue_flags import add_connection_flags, add_worker_flags, pin_gpu, settings_from_args

logger = logging.getLogger(__name__)

EXIT_ENGINE_LOST = 70  # EX_SOFTWARE: the engine process died; restart the worker


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("worker", help="run a Celery worker for one model on one GPU",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(parser)
    parser.set_defaults(backend=None)  # unset: ORCD_BACKEND, else auto
    parser.add_argument("--gpu", type=int, default=None, help="CUDA ordinal to pin (ORCD_GPU, 0)")
    parser.add_argument("--name", dest="worker_name", default=None, help="worker name (model-gpuN@host-pid)")
    parser.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                        help="serve Prometheus metrics on :PORT/metrics (ORCD_METRICS_PORT; default 0: off)")
    add_connection_flags(parser)
    add_worker_flags(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import redis

    from worker.app import make_app, worker_options
    from worker.errors import BrokerUnavailable, SettingsError
    from worker.service import WorkerService
    from worker.supervise import supervise
    from worker.tasks import register as register_tasks

    settings = settings_from_args(args)
    if not settings.redis_url:
        raise SettingsError("orcd worker needs a shared Redis: set ORCD_REDIS_URL or --redis-url "
                            "(orcd generate / orcd demo start a private one by themselves)")
    pin_gpu(settings.gpu)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise BrokerUnavailable(f"Redis at {settings.redis_url} does not answer: {exc}") from exc
    service = WorkerService.load(settings, client)
    service.on_engine_lost = lambda message: os.kill(os.getpid(), signal.SIGTERM)  # warm shutdown: the
    # jobs it held have failed; a supervisor (compose's restart policy) starts a fresh worker
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    try:
        app = make_app(settings)
        register_tasks(app, service)

        def start_worker() -> int:  # a fresh Celery worker (consumer, connection, pool) per start
            worker = app.Worker(loglevel=level, quiet=True, **worker_options(settings, service.name))
            logger.info("worker %s consuming %s", service.name, settings.queue_name)
            worker.start()
            return int(worker.exitcode or 0)

        code = supervise(start_worker, client.ping, service.name)
        if service.engine_lost:
            logger.critical("worker %s stops: %s", service.name, service.engine_lost)
            return EXIT_ENGINE_LOST
        return code
    finally:
        service.close()
        client.close()
