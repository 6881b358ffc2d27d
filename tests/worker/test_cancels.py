"""CancelWatcher: flags of the watched jobs, refreshed in the background, new ids read at once."""

from __future__ import annotations

import time

import fakeredis

from worker import keys
from worker.cancels import CancelWatcher


def test_cancel_watcher_reports_flags_of_watched_jobs_only():
    redis = fakeredis.FakeRedis()
    watcher = CancelWatcher(redis, interval_s=0.005)
    try:
        assert watcher(["a", "b"]) == set()
        redis.set(keys.job_cancel("b"), b"1")
        redis.set(keys.job_cancel("z"), b"1")  # not held by this worker
        deadline = time.monotonic() + 2.0
        while not watcher(["a", "b"]) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert watcher(["a", "b"]) == {"b"}
        assert watcher(["a"]) == set()
    finally:
        watcher.stop()


def test_cancel_watcher_reads_new_ids_at_once():
    redis = fakeredis.FakeRedis()
    watcher = CancelWatcher(redis, interval_s=60.0)  # no background refresh during the test
    try:
        assert watcher(["old"]) == set()
        redis.set(keys.job_cancel("new"), b"1")
        assert watcher(["old", "new"]) == {"new"}  # never admitted on a stale answer
    finally:
        watcher.stop()
