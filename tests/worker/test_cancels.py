"""CancelWatcher: flags of the watched jobs, refreshed in the background, new ids read at once."""

from __future__ import annotations

import logging
import time

import fakeredis
import redis as redis_lib

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


class _Outage:
    """A fakeredis client whose MGET fails while `down` is set; counts the MGETs tried."""

    def __init__(self) -> None:
        self.redis, self.down, self.calls = fakeredis.FakeRedis(), True, 0

    def mget(self, names):
        self.calls += 1
        if self.down:
            raise redis_lib.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")
        return self.redis.mget(names)


def test_cancel_watcher_backs_off_and_logs_once_per_state_change(caplog):
    client = _Outage()
    caplog.set_level(logging.INFO, logger="worker.cancels")
    watcher = CancelWatcher(client, interval_s=0.005, max_backoff_s=0.1)
    try:
        watcher._watched = frozenset(["a"])  # as after a scheduler turn holding job "a"
        time.sleep(0.6)
        # without backoff: ~120 reads in 0.6 s; with it: 0.01+0.02+0.04+0.08 s, then one per 0.1 s
        assert 4 <= client.calls <= 12, client.calls
        client.redis.set(keys.job_cancel("a"), b"1")
        client.down = False
        deadline = time.monotonic() + 2.0
        while watcher._read[1] != {"a"} and time.monotonic() < deadline:
            time.sleep(0.005)
        assert watcher(["a"]) == {"a"}
    finally:
        watcher.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["cancel flags unreadable (Error 111 connecting to 127.0.0.1:6390. Connection "
                        "refused.); retrying with backoff up to 0.1 s", "cancel flags readable again"]
