"""Polling for a condition in the worker tests: threads, workers and subprocesses get there in their time."""

from __future__ import annotations

import time


def wait_until(predicate, timeout_s: float = 5.0, what: str = "condition", every_s: float = 0.005) -> None:
    """Return once predicate() is true; fail the test, naming `what`, when it is still false after
    timeout_s seconds."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every_s)
