"""CI-sized chaos (bench/chaos_workers.py runs 200 jobs on 3 workers): 24 jobs on 2 `orcd worker`
subprocesses while one is SIGKILLed and restarted every 2-3 s; every stream is whole and ends done or
error, and every output equals an undisturbed single-process run. Real Redis, db 11.
"""

from __future__ import annotations

import pytest

from tests.reliability.chaos import run_chaos
from tests.reliability.cluster import REDIS_URL, flush

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

FAST = dict(job_timeout=4, visibility_timeout=8, restore_interval=1, heartbeat=1.0, chunk_tokens=4,
            chunk_ms=10)


def test_sigkilled_workers_lose_no_job_and_no_seq(tmp_path):
    flush(REDIS_URL)
    try:
        result = run_chaos(tmp_path, REDIS_URL, n_jobs=24, n_workers=2, submit_s=8.0, kill_every=(2.0, 3.0),
                           seed=5, timing=FAST, log=lambda line: None)
    finally:
        flush(REDIS_URL)
    assert result.kills >= 2
    assert len(result.tally.checks) == 24
    assert result.tally.broken == []
    assert {c.outcome for c in result.tally.checks} <= {"done", "error"}
    assert all(c.error_type == "ContextTooLong" for c in result.tally.checks if c.outcome == "error")
    assert result.mismatched == []
