"""The engine process's side (``python -m worker.engine_child SPEC``): model, engine and scheduler.

Started by `worker.engine_process.EngineProcess`, which explains why the engine has a process of its
own. Here the `Scheduler` runs exactly as it would in the worker, with two stand-ins: each job's sink
and the metrics record what happens into an outbox, and the outbox goes to the worker as one message
per scheduler turn. The main thread reads the worker's messages (submit, cancel, stop).

The process dies with its worker: the kernel sends it SIGKILL when the parent exits (PR_SET_PDEATHSIG),
and a closed pipe ends it too, so a killed worker never leaves a GPU process holding its memory. It
ignores SIGINT and SIGTERM: a Ctrl-C or a stop sent to the whole process group reaches the worker,
which finishes or hands back its jobs and then stops this process with a "stop" message.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from .engine_process import JobSpec, load_worker_engine, new_generation, worker_scheduler
from .errors import SchedulerClosed
from .scheduler import Request
from .settings import Settings

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
REPORT_EVERY_S = 10.0


class Outbox:
    """Events of one scheduler turn, sent to the worker as one ("turn", [event, ...]) message.

    It also keeps the process's time account: engine prefill and decode (from the scheduler's
    metrics), sending (blocked when the worker reads too slowly) and the rest (the scheduler's own
    Python: host sampling, detokenising, stop strings), logged at the end of each busy period (jobs
    running or waiting) and every REPORT_EVERY_S within a long one."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._events: list[tuple] = []
        self._tokens = 0  # metrics.token() calls this turn, sent as one count
        self._lock = threading.Lock()
        self._spent = {"prefill": 0.0, "decode": 0.0, "send": 0.0}
        self._reset(time.perf_counter())
        self._busy = False

    def busy(self, busy: bool) -> None:
        """The scheduler's state after a turn: a busy period starts (account reset) or ends (logged)."""
        if busy != self._busy:
            now = time.perf_counter()
            if busy:
                self._reset(now)
            else:
                self._report(now)
            self._busy = busy

    def account(self, phase: str, seconds: float) -> None:
        self._spent[phase] = self._spent.get(phase, 0.0) + seconds

    def add(self, event: tuple) -> None:
        with self._lock:
            self._events.append(event)

    def count_token(self) -> None:
        self._tokens += 1

    def flush(self) -> None:
        with self._lock:
            events, self._events = self._events, []
            if self._tokens:
                events.append(("metric", "tokens", (self._tokens,)))
                self._n_tokens += self._tokens
                self._tokens = 0
        if not events:
            return
        t0 = time.perf_counter()
        self.conn.send(("turn", events))
        now = time.perf_counter()
        self._spent["send"] += now - t0
        self._turns += 1
        if self._busy and now - self._since >= REPORT_EVERY_S:
            self._report(now)

    def _report(self, now: float) -> None:
        wall, spent = now - self._since, self._spent
        logger.info("engine process %d, last %.1f s: %d turns, %d tokens; decode %.2f s, prefill %.2f s, "
                    "sending to the worker %.2f s, the rest (scheduler, host sampling, text) %.2f s",
                    os.getpid(), wall, self._turns, self._n_tokens, spent["decode"], spent["prefill"],
                    spent["send"], wall - sum(spent.values()))
        self._reset(now)

    def _reset(self, now: float) -> None:
        self._spent = dict.fromkeys(self._spent, 0.0)
        self._turns = self._n_tokens = 0
        self._since = now


class RemoteSink:
    """A job's sink (scheduler.JobSink) on this side: its calls become events for the worker."""

    def __init__(self, job_id: str, outbox: Outbox, cancels: set[str]) -> None:
        self.job_id, self.outbox, self.cancels = job_id, outbox, cancels

    def started(self, now: float) -> None:
        self.outbox.add(("started", self.job_id, now))

    def step(self, result: Any, now: float) -> None:  # a gpu.generation.StepResult, as a plain tuple:
        self.outbox.add(("step", self.job_id, now, result.token_id, result.text, result.logprobs,  # 7x
                         result.finish_reason, result.error))  # cheaper to pickle than the dataclass

    def finished(self, finish_reason: str, completion_tokens: int, now: float) -> None:
        self.cancels.discard(self.job_id)
        self.outbox.add(("finished", self.job_id, finish_reason, completion_tokens, now))

    def failed(self, exc: BaseException, now: float) -> None:
        self.cancels.discard(self.job_id)
        self.outbox.add(("failed", self.job_id, type(exc).__name__, str(exc), now))


class RemoteMetrics:
    """WorkerMetrics' recording methods, as events; the worker's own WorkerMetrics replays them."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def token(self) -> None:
        self.outbox.count_token()

    def load(self, *, active: int, queued: int, kv_slots: int) -> None:
        self.outbox.add(("metric", "load", (active, queued, kv_slots)))
        self.outbox.busy(active + queued > 0)

    def engine_step(self, phase: str, seconds: float) -> None:
        self.outbox.account(phase, seconds)
        self.outbox.add(("metric", "engine_step", (phase, seconds)))

    def __getattr__(self, name: str):  # started, finished, failed, first_token, decode_rate, engine_step
        return lambda *args: self.outbox.add(("metric", name, args))


class EngineChild:
    """The scheduler over a loaded engine, driven by the worker's messages."""

    def __init__(self, engine: Any, tokenizer: Any, conn_out: Connection, settings: Settings) -> None:
        self.engine, self.tokenizer = engine, tokenizer
        self.outbox = Outbox(conn_out)
        self.cancels: set[str] = set()  # flagged by the worker; read by the scheduler each turn
        self.scheduler = worker_scheduler(engine, settings, cancelled=lambda ids: self.cancels & set(ids),
                                          on_turn=self.outbox.flush, metrics=RemoteMetrics(self.outbox))

    def _request(self, spec: JobSpec) -> Request:
        return Request(job_id=spec.job_id, prompt_ids=spec.prompt_ids, max_tokens=spec.max_tokens,
                       new_generation=functools.partial(new_generation, spec.prompt_ids, spec.params,
                                                        self.tokenizer, self.engine.max_context),
                       sink=RemoteSink(spec.job_id, self.outbox, self.cancels), priority=spec.priority,
                       deadline=spec.deadline, correlation_id=spec.correlation_id,
                       submitted_at=spec.submitted_at, params=spec.params)

    def serve(self, conn_in: Connection) -> None:
        """Run until the worker says stop (clean exit) or its end of the pipe closes (exit at once)."""
        self.scheduler.start()
        while True:
            try:
                message = conn_in.recv()
            except (EOFError, OSError):
                logger.error("engine process %d: the worker's pipe closed; exiting", os.getpid())
                os._exit(0)
            kind = message[0]
            if kind == "submit":  # one job's spec or a group's, in one list
                requests = [self._request(spec) for spec in message[1]]
                try:
                    self.scheduler.submit_many(requests)
                except SchedulerClosed as exc:
                    for request in requests:
                        request.sink.failed(exc, time.time())
            elif kind == "cancel":
                self.cancels.update(message[1])
            elif kind == "stop":
                self.scheduler.stop(close_engine=True)
                self.outbox.flush()
                return


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent exits (Linux); exit now if the parent is already gone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        logger.debug("prctl unavailable: the engine process relies on its pipe to notice the worker's end")
    if os.getppid() != parent_pid:
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    """Load the model named in the JSON spec (argv[0]), report ready or fatal, then serve."""
    spec = json.loads((argv if argv is not None else sys.argv[1:])[0])
    for stop_signal in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C in a terminal or a stop of the whole
        signal.signal(stop_signal, signal.SIG_IGN)  # group is the worker's to handle: it stops this
    die_with_parent(spec["parent_pid"])  # process in order (a "stop" message), or takes it along
    logging.basicConfig(level=spec["log_level"],
                        format="%(asctime)s %(levelname)s %(name)s[engine]: %(message)s")
    conn_in = Connection(spec["fd_in"], writable=False)
    conn_out = Connection(spec["fd_out"], readable=False)
    settings = Settings(**spec["settings"])
    sys.setswitchinterval(settings.gil_switch_us / 1e6)
    try:
        from tokenizer import load_tokenizer

        tokenizer = load_tokenizer(spec["model"])
        engine = load_worker_engine(settings, spec["model"])  # warmed up before `ready`
    except Exception as exc:  # reported to the worker, which stops with this message
        conn_out.send(("fatal", type(exc).__name__, str(exc)))
        return 1
    child = EngineChild(engine, tokenizer, conn_out, settings)
    conn_out.send(("ready", {"backend": engine.backend, "max_batch": engine.max_batch,
                             "max_context": engine.max_context, "pid": os.getpid()}))
    child.serve(conn_in)
    conn_out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
