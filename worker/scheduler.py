"""Continuous batching: one thread owns the engine and interleaves every job a worker holds.

Each turn of the loop: take newly submitted requests; retire those cancelled or past their deadline;
admit waiting requests (highest priority, then oldest) while the batch has room and the engine has a
free KV slot, refusing any whose prompt plus max_tokens cannot fit in the context; prefill the newly
admitted together (`gpu.runner.prefill_rows`: the CUDA engine packs short prompts into one pass and
picks their first tokens on the GPU), and for up to `admit_window_s` also the jobs that arrived
meanwhile (a burst of submissions joins the batch in a few turns instead of one decode step per
arrival); decode one token
for everything running (`gpu.runner.decode_rows`, the decode step `orcd run` uses too: tokens picked
on the GPU where the engine can, else sampled here from the logits); hand each step to the job's sink
and free the slots of finished jobs. A failure is confined to the jobs it touches: a bad request fails
alone, an engine error fails the batch it happened in, and the loop keeps serving. At
`stop(close_engine=True)` the thread closes the engine itself, after its last turn.

Pure Python over two small protocols (`EngineLike`, `GenerationLike`), so it is tested without
Celery, Redis or a GPU. It records the worker's metrics (worker/metrics.py) where it calls the sinks,
and tags every log line about a job with the job's id and correlation id.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from gpu.decode_ahead import DecodeAhead
from gpu.errors import KVCacheFull
from gpu.runner import advance, prefill_rows

from .errors import ContextTooLong, DeadlineExceeded, InvalidJob, SchedulerClosed
from .joblog import JobLogger, job_logger
from .metrics import WorkerMetrics

logger = logging.getLogger(__name__)


class EngineLike(Protocol):
    max_batch: int
    max_context: int

    def alloc(self) -> int: ...
    def free(self, slot: int) -> None: ...
    def prefill(self, slots: list[int], prompts: list[list[int]]) -> Any: ...  # [B, vocab]
    def decode(self, slots: list[int], token_ids: list[int]) -> Any: ...  # [B, vocab]
    def close(self) -> None: ...


class StepLike(Protocol):
    token_id: int
    text: str
    logprobs: Any
    finish_reason: str | None


class GenerationLike(Protocol):
    """What `advance` needs (gpu.generation.Generation); `accept` and the device-sampling attributes
    (`device_sampleable`, ...) only where `decode_rows` hands the generation an engine-picked token."""

    def step(self, logits_row: Any) -> StepLike: ...
    def fail(self, message: str) -> StepLike: ...
    def cancel(self) -> StepLike: ...  # ends it between steps, releasing held-back text


class JobSink(Protocol):
    """Where a job's progress goes (the publisher, in a worker); called on the scheduler thread."""

    def started(self, now: float) -> None: ...
    def step(self, result: StepLike, now: float) -> None: ...
    def finished(self, finish_reason: str, completion_tokens: int, now: float) -> None: ...
    def failed(self, exc: BaseException, now: float) -> None: ...


@dataclass
class Request:
    job_id: str
    prompt_ids: list[int]
    max_tokens: int
    new_generation: Callable[[], GenerationLike]
    sink: JobSink
    priority: int = 5
    deadline: float | None = None  # on the scheduler's clock
    correlation_id: str | None = None
    submitted_at: float | None = None  # on the scheduler's clock (TTFT); None: when `submit` got it
    params: Any = None  # the sampling parameters behind `new_generation` (an engine process rebuilds it)

    @property
    def log(self) -> JobLogger:
        return job_logger(logger, self.job_id, self.correlation_id)


@dataclass
class _Running:
    request: Request
    slot: int
    generation: GenerationLike
    n_tokens: int = 0
    last_token: int = -1
    first_token_at: float | None = None


@dataclass(order=True)
class _Waiting:
    key: tuple[int, int]
    request: Request = field(compare=False)


class Scheduler:
    """Runs requests on `engine` in continuous batches; `submit` is safe from any thread."""

    def __init__(self, engine: EngineLike, *,
                 cancelled: Callable[[Collection[str]], set[str]] = lambda ids: set(),
                 clock: Callable[[], float] = time.time, step_delay_s: float = 0.0,
                 on_turn: Callable[[], None] = lambda: None, metrics: WorkerMetrics | None = None,
                 admit_window_s: float = 0.0) -> None:
        self.engine = engine
        self.ahead = DecodeAhead(engine)  # the next decode step queued while this one's tokens are handled
        self.admit_window_s = admit_window_s  # per turn: keep prefilling arrivals this long before decoding
        self.metrics = metrics or WorkerMetrics()
        self.on_turn = on_turn  # after each prefill and each turn (the publisher's cue to write)
        self.cancelled = cancelled
        self.clock = clock
        self.step_delay_s = step_delay_s
        self._inbox: list[Request] = []
        self._waiting: list[_Waiting] = []
        self._running: list[_Running] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._closed = False
        self._close_engine = False
        self._thread: threading.Thread | None = None

    # ---- outside the scheduler thread

    def submit(self, request: Request) -> None:
        self.submit_many([request])

    def submit_many(self, requests: list[Request]) -> None:
        """Hand over `requests` at once: the scheduler's next turn sees all of them (a group's jobs)."""
        with self._wake:
            if self._closed:
                raise SchedulerClosed(f"job {requests[0].job_id}: the scheduler has stopped")
            for request in requests:
                if request.submitted_at is None:
                    request.submitted_at = self.clock()
            self._inbox.extend(requests)
            self._wake.notify()

    @property
    def n_running(self) -> int:
        return len(self._running)

    @property
    def n_waiting(self) -> int:
        return len(self._waiting) + len(self._inbox)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="orcd-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0, *, close_engine: bool = False) -> None:
        """End the loop after its current turn; with ``close_engine`` the engine is closed too, on the
        scheduler's thread (the one that drove it), or here if the thread never started."""
        with self._wake:
            self._closed = True
            self._close_engine = close_engine
            self._wake.notify()
        if self._thread is None:
            if close_engine:
                self._close()
            return
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.error("scheduler thread still busy after %.1f s; it stops (closing the engine if asked) "
                         "when its turn ends", timeout_s)

    def _loop(self) -> None:
        try:
            self._serve()
        finally:
            if self._close_engine:
                self._close()

    def _close(self) -> None:
        try:
            self.engine.close()
        except Exception:
            logger.exception("closing the engine failed")

    def _serve(self) -> None:
        while not self._closed:
            try:
                busy = self.run_once()
            except Exception as exc:  # a bug in this loop must not take the worker down silently
                logger.exception("scheduler turn failed; failing the %d running jobs", len(self._running))
                self._fail_all(self._running, exc)
                busy = False
            _call(self.on_turn)
            if not busy:
                with self._wake:
                    if not self._inbox and not self._closed:
                        self._wake.wait(0.05)

    # ---- one turn (the scheduler thread, or a test)

    def run_once(self) -> bool:
        """One turn of the loop; True when the engine ran."""
        self._take_inbox()
        self._retire_cancelled_and_late()
        admitted = self._admit()
        prefilled = bool(admitted)
        window_ends = time.perf_counter() + self.admit_window_s
        while admitted:
            self._prefill(admitted)
            _call(self.on_turn)  # first tokens go out now, not after the decode step below
            if time.perf_counter() >= window_ends:
                break
            self._take_inbox()  # jobs that arrived during that prefill join the batch before the decode
            admitted = self._admit()  # step, so a burst of arrivals is not interleaved with decodes
        if self._running:
            self._decode()
            if self.step_delay_s:
                time.sleep(self.step_delay_s)
        self.metrics.load(active=len(self._running), queued=self.n_waiting, kv_slots=len(self._running))
        return bool(prefilled or self._running)

    def _take_inbox(self) -> None:
        with self._wake:
            inbox, self._inbox = self._inbox, []
        for request in inbox:
            heapq.heappush(self._waiting, _Waiting((-request.priority, next(self._order)), request))

    def _retire_cancelled_and_late(self) -> None:
        requests = [w.request for w in self._waiting] + [r.request for r in self._running]
        if not requests:
            return
        ids = [request.job_id for request in requests]
        try:
            cancelled = self.cancelled(ids)
        except Exception:
            logger.exception("cancel check failed for %d jobs; trying again next turn", len(ids))
            cancelled = set()
        now = self.clock()
        late = {r.job_id for r in requests if r.deadline is not None and now >= r.deadline}
        if not (cancelled or late):
            return
        keep = []
        for waiting in self._waiting:
            job_id = waiting.request.job_id
            if job_id in cancelled:
                waiting.request.log.info("cancelled while waiting; never started")
                self._finished(waiting.request, "cancelled", 0, now)
            elif job_id in late:
                self._failed(waiting.request, DeadlineExceeded(f"job {job_id}: deadline passed "
                                                               "while waiting for a batch slot"), now)
            else:
                keep.append(waiting)
        self._waiting = keep
        heapq.heapify(self._waiting)
        for running in list(self._running):
            job_id = running.request.job_id
            if job_id in cancelled:
                running.request.log.info("cancelled after %d tokens", running.n_tokens)
                self._retire(running)
                try:
                    _call(running.request.sink.step, running.generation.cancel(), now)
                finally:
                    self._finished(running.request, "cancelled", running.n_tokens, now, running)
            elif job_id in late:
                self._retire(running)
                self._failed(running.request, DeadlineExceeded(
                    f"job {job_id}: deadline passed after {running.n_tokens} tokens"), now)

    def _admit(self) -> list[_Running]:
        admitted: list[_Running] = []
        while self._waiting and len(self._running) + len(admitted) < self.engine.max_batch:
            request = self._waiting[0].request
            now = self.clock()
            need = len(request.prompt_ids) + request.max_tokens
            if not request.prompt_ids:
                heapq.heappop(self._waiting)
                self._failed(request, InvalidJob(f"job {request.job_id}: the prompt has no tokens"), now)
                continue
            if need > self.engine.max_context:
                heapq.heappop(self._waiting)
                self._failed(request, ContextTooLong(
                    f"job {request.job_id}: prompt ({len(request.prompt_ids)} tokens) + max_tokens "
                    f"({request.max_tokens}) = {need} exceeds the worker's max context "
                    f"({self.engine.max_context})"), now)
                continue
            try:
                slot = self.engine.alloc()
            except KVCacheFull:
                break  # wait for a running job to free its slot
            heapq.heappop(self._waiting)
            try:
                generation = request.new_generation()
            except Exception as exc:
                self.engine.free(slot)
                request.log.exception("creating its generation failed")
                self._failed(request, exc, now)
                continue
            admitted.append(_Running(request, slot, generation))
        return admitted

    def _prefill(self, admitted: list[_Running]) -> None:
        now = self.clock()
        for running in admitted:
            self.metrics.started()
            _call(running.request.sink.started, now)
        t0 = time.perf_counter()
        try:
            rows = prefill_rows(self.engine, [r.slot for r in admitted],
                                [r.request.prompt_ids for r in admitted], [r.generation for r in admitted])
        except Exception as exc:
            logger.exception("prefill of %d jobs failed (%s)", len(admitted), _ids(admitted))
            for running in admitted:
                self.engine.free(running.slot)
            self._notify_failed(admitted, exc)
            return
        self.metrics.engine_step("prefill", time.perf_counter() - t0)
        self._running.extend(admitted)
        self._advance(admitted, rows)  # first tokens: picked by the engine, or sampled here

    def _decode(self) -> None:
        batch = list(self._running)
        t0 = time.perf_counter()
        try:
            rows = self.ahead.rows([r.slot for r in batch], [r.last_token for r in batch],
                                   [r.generation for r in batch])
        except Exception as exc:
            logger.exception("decode of %d jobs failed (%s)", len(batch), _ids(batch))
            self._fail_all(batch, exc)
            return
        self.metrics.engine_step("decode", time.perf_counter() - t0)
        self._advance([batch[i] for i, _ in rows], [row for _, row in rows])

    def _advance(self, batch: list[_Running], rows: Any) -> None:
        """Each job's row (logits [vocab], or a token the engine picked) through its generation."""
        now = self.clock()
        for running, row in zip(batch, rows, strict=True):
            try:
                result = advance(running.generation, row)
            except Exception as exc:
                running.request.log.exception("generation step failed")
                self._retire(running)
                self._failed(running.request, exc, now)
                continue
            if result.token_id is not None:
                running.n_tokens += 1
                running.last_token = result.token_id
                self.metrics.token()
                if running.first_token_at is None:
                    running.first_token_at = now
                    self.metrics.first_token(max(0.0, now - (running.request.submitted_at or now)))
            _call(running.request.sink.step, result, now)
            if result.finish_reason is not None:
                self._retire(running)
                self._finished(running.request, result.finish_reason, running.n_tokens, now, running)

    def _retire(self, running: _Running) -> None:
        self._running.remove(running)
        try:
            self.engine.free(running.slot)
        except Exception:
            running.request.log.exception("freeing slot %d failed", running.slot)

    def _fail_all(self, batch: list[_Running], exc: BaseException) -> None:
        for running in list(batch):
            if running in self._running:
                self._retire(running)
        self._notify_failed(batch, exc)

    def _notify_failed(self, batch: list[_Running], exc: BaseException) -> None:
        now = self.clock()
        for running in batch:
            self._failed(running.request, exc, now)

    # ---- a job leaves the scheduler: metrics, then its sink

    def _finished(self, request: Request, reason: str, n_tokens: int, now: float,
                  running: _Running | None = None) -> None:
        if reason == "error":  # the generation ended itself on an error (its sink reports it)
            self.metrics.failed("GenerationError")
        else:
            self.metrics.finished(reason)
        first = running.first_token_at if running is not None else None
        if first is not None and n_tokens > 1 and now > first:
            self.metrics.decode_rate((n_tokens - 1) / (now - first))
        request.log.debug("finished (%s) after %d tokens", reason, n_tokens)
        _call(request.sink.finished, reason, n_tokens, now)

    def _failed(self, request: Request, exc: BaseException, now: float) -> None:
        self.metrics.failed(type(exc).__name__)
        request.log.debug("failed: %s: %s", type(exc).__name__, exc)
        _call(request.sink.failed, exc, now)


def _ids(batch: list[_Running]) -> str:
    """"job cid, job cid ..." of a batch, for log lines about all its jobs."""
    return ", ".join(f"{r.request.job_id} cid {r.request.correlation_id or '-'}" for r in batch)


def _call(callback: Callable[..., None], *args: Any) -> None:
    """Call a sink; a sink's failure is logged, never allowed to stop the loop."""
    try:
        callback(*args)
    except Exception:
        logger.exception("job sink %s failed", getattr(callback, "__qualname__", callback))
