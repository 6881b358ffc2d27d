"""worker.pool: the threads pool starts all its threads before the worker consumes anything."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from worker.pool import ThreadPool, prestart


def test_prestart_starts_every_thread_and_they_are_reused():
    with ThreadPoolExecutor(max_workers=6) as executor:
        assert prestart(executor, 6) == 6
        names = {executor.submit(lambda: threading.current_thread().name).result() for _ in range(20)}
        assert len(executor._threads) == 6 and names <= {t.name for t in executor._threads}


def test_thread_pool_is_full_once_started():
    pool = ThreadPool(limit=5)
    pool.start()
    try:
        assert len(pool.executor._threads) == 5
    finally:
        pool.stop()
