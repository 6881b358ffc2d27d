"""Cancel flags (``orcd:job:<id>:cancel``) as the scheduler sees them, read off its thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection

import redis as redis_lib

from . import keys

logger = logging.getLogger(__name__)


class CancelWatcher:
    """Reads the cancel flags of the jobs the scheduler holds, mostly off the scheduler thread.

    The scheduler calls it once per turn with its job ids and gets back those flagged. A background
    thread refreshes the flags of the known ids (one MGET) every `interval_s`, so the engine rarely
    waits on Redis; ids the last refresh did not cover (jobs new this turn) are read at once, so a
    job is never admitted on a stale answer.
    """

    def __init__(self, client: redis_lib.Redis, interval_s: float = 0.01, max_backoff_s: float = 1.0) -> None:
        self.client, self.interval_s, self.max_backoff_s = client, interval_s, max_backoff_s
        self._watched: frozenset[str] = frozenset()
        self._read: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())  # (checked, flagged)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orcd-cancels", daemon=True)
        self._thread.start()

    def __call__(self, job_ids: Collection[str]) -> set[str]:
        self._watched = watched = frozenset(job_ids)
        checked, flagged = self._read
        fresh = watched - checked
        hits = set(flagged & watched)
        if fresh:
            hits |= self._flags(list(fresh))
        return hits

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def _flags(self, ids: list[str]) -> set[str]:
        flags = self.client.mget([keys.job_cancel(i) for i in ids])
        return {i for i, flag in zip(ids, flags, strict=True) if flag}

    def _run(self) -> None:
        """Refresh every `interval_s`; while Redis fails, back off (doubling, up to `max_backoff_s`)
        and log only the changes: one warning when reads start failing, one line when they work again."""
        delay, down = self.interval_s, False
        while not self._stop.wait(delay):
            ids = list(self._watched)
            try:
                self._read = (frozenset(ids), frozenset(self._flags(ids)) if ids else frozenset())
            except redis_lib.RedisError as exc:
                if not down:
                    logger.warning("cancel flags unreadable (%s); retrying with backoff up to %g s",
                                   exc, self.max_backoff_s)
                    down = True
                delay = min(2 * delay, max(self.max_backoff_s, self.interval_s))
                continue
            if down:
                logger.warning("cancel flags readable again")
                down = False
            delay = self.interval_s
