"""supervise: a Celery worker that exits on a broker failure is replaced in process once the broker
answers; a requested stop, a clean exit or too many failures in the window end it."""

from __future__ import annotations

import logging

import redis as redis_lib

from worker.supervise import RestartPolicy, supervise, wait_for_broker


class Script:
    """Exit codes for successive starts, broker answers for successive pings, a fake clock."""

    def __init__(self, codes: list[int], pings: list[bool], stop_after: int | None = None) -> None:
        self.codes, self.pings, self.stop_after = list(codes), list(pings), stop_after
        self.starts, self.pinged, self.slept, self.now = 0, 0, [], 0.0

    def start(self) -> int:
        self.starts += 1
        self.now += 10.0  # each worker lives 10 s
        return self.codes.pop(0)

    def ping(self) -> None:
        self.pinged += 1
        if not self.pings.pop(0):
            raise redis_lib.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s

    def should_stop(self) -> bool:
        return self.stop_after is not None and self.starts >= self.stop_after

    def run(self, policy: RestartPolicy | None = None) -> int:
        return supervise(self.start, self.ping, "w1", policy=policy or RestartPolicy(),
                         should_stop=self.should_stop, clock=lambda: self.now, sleep=self.sleep)


def test_restarts_after_a_failure_once_the_broker_answers(caplog):
    caplog.set_level(logging.INFO, logger="worker.supervise")
    script = Script(codes=[1, 0], pings=[False, False, False, False, True])
    assert script.run() == 0
    assert script.starts == 2 and script.pinged == 5
    assert script.slept == [0.25, 0.5, 1.0, 2.0]  # doubling, capped at max_backoff_s
    assert [r.getMessage() for r in caplog.records] == [
        "worker w1: Celery worker exited with code 1 without a stop request; starting a fresh one once "
        "the broker answers (model stays loaded)",
        "worker w1: broker does not answer (Error 111 connecting to 127.0.0.1:6390. Connection refused.); "
        "pinging it with backoff up to 2 s",
        "worker w1: broker answers again",
    ]


def test_requested_stop_is_not_restarted():
    script = Script(codes=[1], pings=[], stop_after=1)  # SIGTERM: Celery's flags are set
    assert script.run() == 1
    assert (script.starts, script.pinged) == (1, 0)


def test_clean_exit_ends_at_once():
    script = Script(codes=[0], pings=[])
    assert script.run() == 0
    assert (script.starts, script.pinged) == (1, 0)


def test_gives_up_after_max_failures_in_the_window(caplog):
    caplog.set_level(logging.ERROR, logger="worker.supervise")
    script = Script(codes=[1, 1, 1, 1], pings=[True] * 3)
    assert script.run(RestartPolicy(max_failures=3, window_s=60.0)) == 1
    assert (script.starts, script.pinged) == (3, 2)
    assert [r.getMessage() for r in caplog.records] == [
        "worker w1: Celery worker exited 3 times within 60 s (last code 1); giving up"]


def test_failures_outside_the_window_do_not_count():
    script = Script(codes=[1, 1, 1, 0], pings=[True] * 3)  # one failure per 10 s, window 5 s
    assert script.run(RestartPolicy(max_failures=2, window_s=5.0)) == 0
    assert (script.starts, script.pinged) == (4, 3)


def test_wait_for_broker_ends_on_a_stop_request():
    stops = iter([False, False, True])
    script = Script(codes=[], pings=[False, False])
    assert not wait_for_broker(script.ping, "w1", RestartPolicy(), lambda: next(stops), script.sleep)
    assert script.pinged == 2 and script.slept == [0.25, 0.5]
