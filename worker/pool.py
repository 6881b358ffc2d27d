"""Celery's threads pool with every thread started at the worker's start.

`concurrent.futures.ThreadPoolExecutor` starts a thread on a submit that finds none idle, so the first
burst of jobs a worker takes starts one thread per job on Celery's consumer thread, between one message
and the next BRPOP, while the threads already started compete for the GIL. `ThreadPool` starts all
`limit` threads before the worker consumes anything: each waits at a barrier until all are up, then
sits idle in the executor, which hands it the next job without starting a thread.
"""

from __future__ import annotations

import logging
import threading

from celery.concurrency.thread import TaskPool

logger = logging.getLogger(__name__)

POOL = "worker.pool:ThreadPool"  # for WorkController(pool=...)


def prestart(executor, n: int, timeout_s: float = 30.0) -> int:
    """Start `n` threads in `executor` (each waits until all have started); returns the thread count."""
    barrier = threading.Barrier(n + 1)
    for _ in range(n):
        executor.submit(barrier.wait, timeout_s)
    try:
        barrier.wait(timeout_s)
    except threading.BrokenBarrierError:
        logger.warning("threads pool: only %d of %d threads started within %g s",
                       len(executor._threads), n, timeout_s)
    return len(executor._threads)


class ThreadPool(TaskPool):
    def on_start(self) -> None:
        super().on_start()
        prestart(self.executor, self.limit)
