"""Keep a Celery worker consuming in this process across broker outages; the model stays loaded.

Why: with celery/kombu 5.7.0 and redis-py 8.1, a consumer that is waiting for messages when Redis
restarts can die in its reconnect (``AttributeError: 'NoneType' object has no attribute 'hostname'``
in kombu's redis transport ``_connparams``); Celery logs "Unrecoverable error" and its worker returns
exit code 1. `supervise` then waits until the broker answers and starts a fresh Celery worker
instead of letting the process exit, unless the stop was asked for (SIGTERM/SIGINT set Celery's
shutdown flags) or the worker failed `max_failures` times within `window_s`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestartPolicy:
    """Bounds of the in-process restarts: give up after `max_failures` exits within `window_s`."""

    max_failures: int = 5
    window_s: float = 300.0
    backoff_s: float = 0.25  # first pause between broker pings; doubles per miss
    max_backoff_s: float = 2.0


def stop_requested() -> bool:
    """True once a shutdown signal reached Celery's handlers (warm or cold)."""
    from celery.worker import state

    return any(flag is not None and flag is not False for flag in (state.should_stop, state.should_terminate))


def wait_for_broker(ping: Callable[[], object], name: str, policy: RestartPolicy,
                    should_stop: Callable[[], bool] = stop_requested,
                    sleep: Callable[[float], None] = time.sleep) -> bool:
    """Ping until the broker answers (True) or a stop is requested (False).

    Logs once when the broker is found down and once when it answers again, never per ping.
    """
    delay, down = policy.backoff_s, False
    while not should_stop():
        try:
            ping()
        except Exception as exc:  # refused, timed out, loading, auth...: not serving yet
            if not down:
                logger.warning("worker %s: broker does not answer (%s); pinging it with backoff up to %g s",
                               name, exc, policy.max_backoff_s)
                down = True
            sleep(delay)
            delay = min(2 * delay, policy.max_backoff_s)
            continue
        if down:
            logger.warning("worker %s: broker answers again", name)
        return True
    return False


def supervise(start_worker: Callable[[], int], ping: Callable[[], object], name: str, *,
              policy: RestartPolicy = RestartPolicy(), should_stop: Callable[[], bool] = stop_requested,
              clock: Callable[[], float] = time.monotonic,
              sleep: Callable[[float], None] = time.sleep) -> int:
    """Run `start_worker` (a fresh Celery worker; returns its exit code) until it ends cleanly or on
    request; after any other exit, wait for the broker and start another. Returns the exit code."""
    failures: deque[float] = deque()
    while True:
        code = start_worker()
        if code == 0 or should_stop():
            return code
        now = clock()
        failures.append(now)
        while now - failures[0] > policy.window_s:
            failures.popleft()
        if len(failures) >= policy.max_failures:
            logger.error("worker %s: Celery worker exited %d times within %g s (last code %d); giving up",
                         name, len(failures), policy.window_s, code)
            return code
        logger.warning("worker %s: Celery worker exited with code %d without a stop request; starting a "
                       "fresh one once the broker answers (model stays loaded)", name, code)
        if not wait_for_broker(ping, name, policy, should_stop, sleep):
            return code
