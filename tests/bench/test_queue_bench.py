"""bench/queue_bench.py's log parsing: when each job of a burst reached a worker's Celery consumer."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import queue_bench  # noqa: E402


def test_received_at_reads_the_consumers_lines_for_the_given_jobs():
    lines = [
        "2026-11-27 13:29:58,900 INFO celery.worker.strategy: Task orcd.generate[aaa1] received",
        "2026-11-27 13:29:58,903 INFO worker.service: job aaa1 cid -: attempt 1, 12 prompt tokens",
        "2026-11-27 13:29:59,204 INFO celery.worker.strategy: Task orcd.generate[bbb2] received",
        "2026-11-27 13:29:59,300 INFO celery.worker.strategy: Task orcd.generate[ccc3] received",
    ]
    got = queue_bench.received_at(lines, {"aaa1", "bbb2"})
    assert len(got) == 2 and round((got[1] - got[0]) * 1000) == 304


def test_received_at_reads_every_message_or_the_service_handoffs():
    lines = [
        "2026-11-27 13:29:58,900 INFO celery.worker.strategy: Task orcd.generate_many[group-ab1] received",
        "2026-11-27 13:29:58,903 INFO worker.service: job aaa1 cid -: attempt 1, 12 prompt tokens",
        "2026-11-27 13:29:58,931 INFO worker.service: job bbb2 cid c-9: attempt 2, 10 prompt tokens",
        "2026-11-27 13:29:59,204 INFO celery.worker.strategy: Task orcd.generate[ccc3] received",
    ]
    assert len(queue_bench.received_at(lines, None)) == 2
    got = queue_bench.received_at(lines, {"aaa1", "bbb2", "ccc3"}, queue_bench.HANDOFF)
    assert len(got) == 2 and round((got[1] - got[0]) * 1000) == 28
