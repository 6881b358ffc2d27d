"""Flags shared by the queue commands (worker, generate, batch, status, demo) → `Settings`."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator

# Settings fields that flags may set (each flag's dest is the field's name)
QUEUE_SETTINGS = ("redis_url", "queue", "max_queue", "max_batch", "max_context", "model", "backend", "gpu",
                  "concurrency", "worker_name", "chunk_tokens", "chunk_ms", "job_timeout_s",
                  "visibility_timeout_s", "restore_interval_s", "heartbeat_s", "step_delay_ms",
                  "metrics_port", "admit_window_ms")


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", default=None, metavar="URL",
                        help="broker (default ORCD_REDIS_URL; unset: a private embedded Valkey server)")
    parser.add_argument("--queue", default=None, help="Celery queue (default orcd.<model-name>)")


def add_worker_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of a worker (also for the in-process worker of generate/demo/batch)."""
    g = parser.add_argument_group("worker (defaults from ORCD_* variables)")
    g.add_argument("--max-batch", type=int, default=None, help="sequences decoded together (8)")
    g.add_argument("--max-context", type=int, default=None, help="KV positions per sequence (2048)")
    g.add_argument("--max-queue", type=int, default=None, help="QueueFull at this many waiting jobs (1000)")
    g.add_argument("--concurrency", type=int, default=None, help="jobs taken at once (2 x max batch)")
    g.add_argument("--chunk-tokens", type=int, default=None, help="tokens per event at most (8)")
    g.add_argument("--chunk-ms", type=float, default=None, help="oldest token's age that sends a chunk (20)")
    g.add_argument("--job-timeout", dest="job_timeout_s", type=float, default=None,
                   help="longest attempt of one job, seconds (600)")
    g.add_argument("--visibility-timeout", dest="visibility_timeout_s", type=float, default=None,
                   help="an unacknowledged job is redelivered after this, seconds (900)")
    g.add_argument("--restore-interval", dest="restore_interval_s", type=float, default=None,
                   help="how often a worker looks for jobs of dead workers, seconds (10)")
    g.add_argument("--heartbeat", dest="heartbeat_s", type=float, default=None, help="seconds (5)")
    g.add_argument("--admit-window-ms", type=float, default=None,
                   help="per turn, keep prefilling jobs that arrive meanwhile this long before decoding (25)")
    g.add_argument("--step-delay-ms", type=float, default=None, help=argparse.SUPPRESS)  # tests: a slow GPU


def settings_from_args(args: argparse.Namespace):
    """Settings from ORCD_* with every flag that was given on top (SettingsError when invalid)."""
    from worker.settings import load_settings

    return load_settings(**{name: getattr(args, name) for name in QUEUE_SETTINGS
                            if getattr(args, name, None) is not None})


def pin_gpu(ordinal: int) -> str:
    """Make GPU `ordinal` the only one this process sees (before anything initialises CUDA).

    With CUDA_VISIBLE_DEVICES already set (a scheduler's allocation), `ordinal` indexes that list.
    Returns the value set.
    """
    from worker.errors import SettingsError, WorkerError

    if "pycuda.driver" in sys.modules or "pycuda.autoinit" in sys.modules:
        raise WorkerError(f"CUDA was initialised before the worker could pin GPU {ordinal}")
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if visible and ordinal >= len(visible):
        raise SettingsError(f"gpu {ordinal} (ORCD_GPU / --gpu) is not among CUDA_VISIBLE_DEVICES="
                            f"{','.join(visible)}")
    device = visible[ordinal] if visible else str(ordinal)
    os.environ["CUDA_VISIBLE_DEVICES"] = device
    return device


@contextlib.contextmanager
def connect(settings) -> Iterator:
    """A Client on the configured Redis, or, with none configured, on a private server with an
    in-process worker (the same code path as production)."""
    from worker.client import Client
    from worker.embedded import local_worker

    if settings.redis_url:
        client = Client(settings=settings)
        try:
            yield client
        finally:
            client.close()
        return
    print("orcd: no ORCD_REDIS_URL: starting a private Valkey server and an in-process worker "
          f"({settings.model_name}, backend {settings.backend})", file=sys.stderr)
    with local_worker(settings) as client:
        yield client


def cancel_quietly(client, job_ids) -> None:
    """Ask jobs to stop on the way out (Ctrl-C); a broker that is gone already is not an error here."""
    import redis

    from worker.errors import JobError

    for job_id in job_ids:
        try:
            client.cancel(job_id)
        except (redis.RedisError, JobError) as exc:
            print(f"orcd: could not cancel job {job_id}: {exc}", file=sys.stderr)
