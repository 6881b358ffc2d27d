"""The engine in a process of its own, behind the scheduler's interface.

Why: a worker process also runs Celery's consumer, one thread per job taken, the publisher (event
encoding, Redis writes), the cancel watcher and the heartbeat. With the engine in that process, the
scheduler thread gives up the GIL at every GPU wait and then queues for it behind those threads, so a
batch of 64 jobs reached only 0.3-0.44 of the engine's own rate on an H200 (docs/benchmarks.md). Here
the scheduler and the engine run in a child (`worker/engine_child.py`) whose only other thread reads
this side's messages; each scheduler turn comes back as one message, replayed here onto the jobs'
sinks (the publisher) and the worker's metrics.

`EngineProcess` has the `Scheduler` methods the service uses (`submit`, `stop`, `n_running`,
`n_waiting`) plus the engine's `backend`, `max_batch`, `max_context`. Messages are pickled tuples over
two one-way pipes (protocol in engine_child.py). Cancel flags are read here (the CancelWatcher) and
forwarded. The child is a fresh interpreter (`subprocess`, not fork: CUDA must not meet fork), pinned
to the GPU by the CUDA_VISIBLE_DEVICES it inherits.

If the child dies while serving, every job it held fails with `EngineProcessDied` (an `error` event
naming the exit code) and `on_lost` is called: `orcd worker` then stops, so its supervisor restarts it
with a fresh engine instead of a worker that takes jobs it cannot run.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from gpu.generation import StepResult

from .errors import EngineProcessDied, EngineStartFailed, SchedulerClosed
from .metrics import WorkerMetrics
from .scheduler import Request, Scheduler
from .settings import Settings

logger = logging.getLogger(__name__)

CANCEL_POLL_S = 0.01


# ---- what a worker builds the same way in its own process and in the engine process


def load_worker_engine(settings: Settings, model_path: str) -> Any:
    """The engine of `model_path` as `settings` ask, warmed up before it serves anything."""
    from gpu.engine import load_engine

    engine = load_engine(model_path, backend=settings.backend, max_batch=settings.max_batch,
                         max_context=settings.max_context, device=0)
    engine.warm_up()  # the worker takes no job until kernels are loaded and graphs captured
    return engine


def worker_scheduler(engine: Any, settings: Settings, **hooks: Any) -> Scheduler:
    """A scheduler over `engine` paced as `settings` ask; `hooks`: cancelled, on_turn, metrics."""
    return Scheduler(engine, step_delay_s=settings.step_delay_ms / 1000.0,
                     admit_window_s=settings.admit_window_ms / 1000.0, **hooks)


def new_generation(prompt_ids: list[int], params: Any, tokenizer: Any, max_context: int) -> Any:
    from gpu.generation import Generation

    return Generation(prompt_ids, params, tokenizer, max_context=max_context)


@dataclass(frozen=True)
class JobSpec:
    """What the child needs to rebuild a `Request` (the sink and generation are made there)."""

    job_id: str
    prompt_ids: list[int]
    params: Any  # gpu.params.SamplingParams
    max_tokens: int
    priority: int
    deadline: float | None
    correlation_id: str | None
    submitted_at: float | None


class EngineProcess:
    """A scheduler and engine in a child process; `start()` returns once the model is loaded there."""

    def __init__(self, settings: Settings, model_path: str, *, metrics: WorkerMetrics,
                 cancelled: Callable[[Collection[str]], set[str]], on_turn: Callable[[], None] = lambda: None,
                 on_lost: Callable[[str], None] = lambda message: None) -> None:
        self.settings, self.model_path = settings, model_path
        self.metrics, self.cancelled, self.on_turn, self.on_lost = metrics, cancelled, on_turn, on_lost
        self.backend, self.max_batch, self.max_context = "", settings.max_batch, settings.max_context
        self.n_running = self.n_waiting = 0
        self._sinks: dict[str, Any] = {}  # job id → its sink, until the job ends
        self._cancel_sent: set[str] = set()
        self._send_lock = threading.Lock()
        self._stopping = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._to_child: Connection | None = None
        self._from_child: Connection | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # ---- lifecycle

    def start(self) -> EngineProcess:
        """Spawn the child and wait until its model is loaded; raise EngineStartFailed if it cannot.
        Call it from a thread that lives as long as the worker (the main thread): Linux sends the
        child its PR_SET_PDEATHSIG when the thread that spawned it exits."""
        child_in, parent_out = os.pipe()
        parent_in, child_out = os.pipe()
        spec = {"settings": self.settings.model_dump(mode="json"), "model": self.model_path,
                "fd_in": child_in, "fd_out": child_out, "parent_pid": os.getpid(),
                "log_level": logging.getLevelName(logging.getLogger().getEffectiveLevel())}
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", "worker.engine_child", json.dumps(spec)],
                                          pass_fds=(child_in, child_out), env=env)
        finally:
            os.close(child_in)
            os.close(child_out)
        self._to_child = Connection(parent_out, readable=False)
        self._from_child = Connection(parent_in, writable=False)
        try:
            message = self._from_child.recv()
        except EOFError:
            message = ("exited",)
        if message[0] != "ready":
            code = self._proc.wait()
            self._to_child.close()
            self._from_child.close()
            if message[0] == "fatal":
                raise EngineStartFailed(f"{message[1]}: {message[2]}")
            raise EngineStartFailed(f"engine process for {self.model_path} exited with code {code} "
                                    "before loading the model (its log lines are above)")
        info = message[1]
        self.backend, self.max_batch, self.max_context = (info["backend"], info["max_batch"],
                                                          info["max_context"])
        logger.info("engine process %d serving %s on %s (max_batch %d, max_context %d)", info["pid"],
                    self.model_path, self.backend, self.max_batch, self.max_context)
        threading.Thread(target=self._receive, name="orcd-engine-rx", daemon=True).start()
        threading.Thread(target=self._relay_cancels, name="orcd-engine-cancels", daemon=True).start()
        return self

    def stop(self, timeout_s: float = 10.0, *, close_engine: bool = False) -> None:
        """Stop the child after its current turn (it always closes its engine); kill it past `timeout_s`."""
        if self._proc is None or self._stopping.is_set():
            return
        self._stopping.set()
        try:
            self._send(("stop",))
        except SchedulerClosed:
            pass
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            logger.error("engine process %d still busy after %.1f s; killing it", self._proc.pid, timeout_s)
            self._proc.kill()
            self._proc.wait()

    # ---- the scheduler's interface

    def submit(self, request: Request) -> None:
        self.submit_many([request])

    def submit_many(self, requests: list[Request]) -> None:
        """Hand over `requests` in one message (a group's jobs reach the child's scheduler together)."""
        for request in requests:
            self._sinks[request.job_id] = request.sink
        try:
            self._send(("submit", [JobSpec(r.job_id, r.prompt_ids, r.params, r.max_tokens, r.priority,
                                           r.deadline, r.correlation_id, r.submitted_at) for r in requests]))
        except SchedulerClosed:
            for request in requests:
                self._sinks.pop(request.job_id, None)
            raise

    def _send(self, message: tuple) -> None:
        assert self._to_child is not None, "EngineProcess.start() first"
        try:
            with self._send_lock:
                self._to_child.send(message)
        except (OSError, ValueError) as exc:
            job = f"job {message[1][0].job_id}: " if message[0] == "submit" else ""
            raise SchedulerClosed(f"{job}the engine process has exited ({exc})") from None

    # ---- threads

    def _receive(self) -> None:
        """Replay each turn's events onto the jobs' sinks and the metrics; notice the child's end."""
        assert self._from_child is not None
        while True:
            try:
                message = self._from_child.recv()
            except (EOFError, OSError):
                break
            if message[0] == "turn":
                for event in message[1]:
                    self._dispatch(event)
                self.on_turn()
        if not self._stopping.is_set():
            self._lost()

    def _dispatch(self, event: tuple) -> None:
        kind = event[0]
        try:
            if kind == "metric":
                self._metric(event[1], event[2])
                return
            sink = self._sinks.get(event[1])
            if sink is None:
                logger.error("engine process sent %s for job %s, which it does not hold", kind, event[1])
            elif kind == "started":
                sink.started(event[2])
            elif kind == "step":
                sink.step(StepResult(*event[3:]), event[2])
            elif kind == "finished":
                self._end(event[1])
                sink.finished(event[2], event[3], event[4])
            elif kind == "failed":
                self._end(event[1])
                sink.failed(RemoteError(event[3], event[2]), event[4])
        except Exception:
            logger.exception("handling the engine process's %s event failed", kind)

    def _metric(self, name: str, args: tuple) -> None:
        if name == "tokens":
            self.metrics.tokens.inc(args[0])
        elif name == "load":
            self.n_running, self.n_waiting = args[0], args[1]
            self.metrics.load(active=args[0], queued=args[1], kv_slots=args[2])
        else:
            getattr(self.metrics, name)(*args)

    def _end(self, job_id: str) -> None:
        self._sinks.pop(job_id, None)
        self._cancel_sent.discard(job_id)

    def _relay_cancels(self) -> None:
        """Forward the cancel flags of the jobs the child holds (read here, off the engine's process)."""
        while not self._stopping.wait(CANCEL_POLL_S):
            ids = list(self._sinks)
            if not ids:
                continue
            try:
                flagged = set(self.cancelled(ids)) - self._cancel_sent
            except Exception:
                logger.exception("cancel check failed for %d jobs; trying again", len(ids))
                continue
            if flagged:
                self._cancel_sent |= flagged
                try:
                    self._send(("cancel", sorted(flagged)))
                except SchedulerClosed:
                    return

    def _lost(self) -> None:
        assert self._proc is not None
        code = self._proc.wait()
        message = f"engine process {self._proc.pid} exited with code {code} while serving"
        sinks, self._sinks = self._sinks, {}
        logger.critical("%s; failing its %d jobs", message, len(sinks))
        self._stopping.set()
        self.on_lost(message)  # first: the owner stops taking jobs before these jobs' errors go out
        now = time.time()
        for job_id, sink in sinks.items():
            self.metrics.failed(EngineProcessDied.__name__)
            try:
                sink.failed(EngineProcessDied(f"job {job_id}: {message}"), now)
            except Exception:
                logger.exception("job %s: reporting the engine's end failed", job_id)
        self.on_turn()


class RemoteError(Exception):
    """An error raised in the engine process, re-created here under its original type's name."""

    def __init__(self, message: str, type_name: str) -> None:
        super().__init__(message)
        self.type_name = type_name
