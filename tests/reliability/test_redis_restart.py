"""CI-sized Redis restart (bench/redis_restart.py): a private redis-server on port 6391 is stopped for
1 s under 6 running jobs and started again, empty or from its append-only file. Workers and gateway
survive and reconnect, fresh jobs (client and HTTP) finish, and the interrupted jobs end clearly when
followed again: done when the data survived, JobNotFound at once when it did not.

Known bugs (reported): with celery/kombu 5.7.0 and redis-py 8.1, a worker whose consumer is waiting
for work dies on the reconnect with an AttributeError inside kombu's redis transport and `orcd worker`
exits; and, timing-dependent, after a restart without persistence, workers publish a job's remaining
events into the empty server, so following it from seq 0 waits forever on a log whose head is gone
(bounded here by 8 s).
The test then xfails naming them, after every other assertion held; anything else fails it.
"""

from __future__ import annotations

import pytest

from tests.reliability.restart import KOMBU_RACE, run_restart

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


@pytest.mark.parametrize("persist", [True, False], ids=["append-only-file", "no-persistence"])
def test_workers_gateway_and_clients_come_back(tmp_path, persist):
    result = run_restart(tmp_path, port=6391, persist=persist, n_jobs=6, down_s=1.0, stream_timeout_s=20.0,
                         resume_timeout_s=8.0, log=lambda line: None)
    assert result.gateway_alive
    assert result.health_during_outage == "503"
    assert result.heartbeats_back_s is not None and result.heartbeats_back_s < 10  # the living ones
    assert result.health_back_s is not None and result.health_back_s < 10
    if result.workers_alive:
        assert [c.outcome for c in result.after.checks] == ["done"] * 8
        assert result.http_after == ["done"] * 3
    assert len(result.in_flight.checks) == 6
    assert not any(c.outcome == "timeout" for c in result.in_flight.checks)
    if persist:
        assert [c.outcome for c in result.resumed.checks] == ["done"] * 6
    else:  # JobNotFound at once, or (known bug) a wait on a log that lost its head
        for c in result.resumed.checks:
            assert (c.detail.startswith("JobNotFound") and c.seconds < 2) or c.job_id in result.headless, c
    assert all(KOMBU_RACE in line for line in result.worker_deaths), result.worker_deaths
    deaths = len(result.worker_deaths)
    known = [f"{deaths} worker(s) died in kombu's reconnect race"] if deaths else []
    if result.headless:
        known.append(f"{len(result.headless)} stream(s) wait forever on a log without its head")
    if known:
        pytest.xfail("; ".join(known) + " (reported)")
    assert result.workers_alive == 2
