"""The worker process's long-lived parts, wired: engine + scheduler thread + publisher + heartbeat.

`WorkerService.run_job` is what a Celery task calls (tasks.py stays thin): it parses the job, reads
what earlier attempts left in the job's log, hands the job to the scheduler and waits until its last
event is in Redis. The task returns (and Celery acks the message) only then, so a worker that dies
before that point leaves the message to be redelivered (docs/queue.md). Every event and log line
about a job carries its id and correlation id; `settings.metrics_port` serves the worker's metrics.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import redis as redis_lib
from pydantic import ValidationError

from . import keys
from .cancels import CancelWatcher
from .engine_process import EngineProcess, load_worker_engine, new_generation, worker_scheduler
from .errors import InvalidJob, WorkerError
from .group_commit import GroupCommit
from .joblog import job_logger
from .metrics import WorkerMetrics
from .publisher import JobPublisher, Publisher
from .scheduler import Request, StepLike
from .schemas import Event, Job, Timings, TokenLogprob, Usage
from .settings import Settings
from .streams import log_state, parse_entry, stream_id

logger = logging.getLogger(__name__)

FINISH_REASONS = ("stop", "length", "cancelled")

Prepared = tuple[list[dict[str, Any]], list[tuple[dict[str, Any], threading.Event]]]  # summaries, ends


def usable_job(payload: Any) -> tuple[dict, str, str | None] | None:
    """(payload, job id, correlation id) of a payload with a usable id; None (logged) otherwise."""
    job_id = payload.get("id") if isinstance(payload, dict) else None
    if not isinstance(job_id, str) or not keys.valid_job_id(job_id):
        logger.error("dropping a job without a usable id: %.200r", payload)
        return None
    cid = payload.get("correlation_id")
    return payload, job_id, cid if isinstance(cid, str) and 0 < len(cid) <= 128 else None


def encode_job(job: Job, tokenizer: Any) -> list[int]:
    """The job's prompt ids, encoded exactly as `orcd run` encodes the same inputs."""
    from gpu.runner import encode_prompt

    if job.prompt is not None:
        return encode_prompt(tokenizer, job.prompt, chat=job.chat, system=job.system)
    messages = [m.model_dump() for m in job.messages or ()]
    ids = tokenizer.encode(tokenizer.render_chat(messages, add_generation_prompt=True),
                           add_special=True, parse_special=True)
    bos = getattr(tokenizer, "bos_id", None)
    return ids[1:] if bos is not None and len(ids) >= 2 and ids[0] == ids[1] == bos else ids


class JobRun:
    """The scheduler's sink for one job attempt: timings, usage, and calls into its JobPublisher."""

    def __init__(self, service: WorkerService, job: Job, publisher: JobPublisher, *, attempt: int,
                 prompt_tokens: int) -> None:
        self.service, self.job, self.jp = service, job, publisher
        self.attempt, self.prompt_tokens = attempt, prompt_tokens
        self.admitted_at: float | None = None
        self.first_token_at: float | None = None
        self.error: str | None = None
        self.log = job_logger(logger, job.id, job.correlation_id)

    def _send(self, method: Any, *args: Any) -> None:
        """Queue a JobPublisher call; the scheduler wakes the publisher once its turn is over."""
        self.service.publisher.call(functools.partial(method, *args), wake=False)

    def _ms(self, t: float | None) -> float:
        return round(((t if t is not None else time.time()) - self.job.created_at) * 1000.0, 3)

    def started(self, now: float) -> None:
        self.admitted_at = now
        self._send(self.jp.started, self.service.name, self._ms(now), self.attempt, now)

    def step(self, result: StepLike, now: float) -> None:
        if result.token_id is not None and self.first_token_at is None:
            self.first_token_at = now
        self.error = getattr(result, "error", None) or self.error
        lp = result.logprobs
        logprob = None if lp is None else TokenLogprob(token_id=lp.token_id, logprob=lp.logprob,
                                                       top=[tuple(pair) for pair in lp.top])
        self._send(self.jp.token, result.token_id, result.text, logprob, now)

    def finished(self, finish_reason: str, completion_tokens: int, now: float) -> None:
        if finish_reason not in FINISH_REASONS:
            self.failed(RuntimeError(self.error or f"generation ended with {finish_reason!r}"), now,
                        error_type="GenerationError")
            return
        usage = Usage(prompt_tokens=self.prompt_tokens if self.admitted_at else 0,
                      completion_tokens=completion_tokens)
        timings = None
        if self.admitted_at is not None:
            first = self.first_token_at or now
            timings = Timings(queue_ms=self._ms(self.admitted_at), ttft_ms=self._ms(first),
                              total_ms=self._ms(now),
                              decode_tok_s=round((completion_tokens - 1) / (now - first), 3)
                              if completion_tokens > 1 and now > first else 0.0)
        self.log.info("done (%s): %d tokens, ttft %s ms", finish_reason, completion_tokens,
                      timings.ttft_ms if timings else "-")
        self._send(self.jp.done, finish_reason, usage, timings, now)

    def failed(self, exc: BaseException, now: float, error_type: str | None = None) -> None:
        error_type = error_type or getattr(exc, "type_name", None) or type(exc).__name__
        self.log.warning("failed: %s: %s", error_type, exc)
        self._send(self.jp.error, error_type, str(exc), now)


class WorkerService:
    """One worker's engine, scheduler, publisher and heartbeat; `run_job` serves one job."""

    def __init__(self, settings: Settings, client: redis_lib.Redis, engine: Any, tokenizer: Any, *,
                 name: str | None = None, model_path: str | None = None) -> None:
        """`engine` None: run the engine of `model_path` in its own process (worker/engine_process.py)."""
        self.settings, self.client, self.tokenizer = settings, client, tokenizer
        self.name = name or settings.worker_name or default_worker_name(settings)
        self.publisher = Publisher(client, chunk_tokens=settings.chunk_tokens, chunk_ms=settings.chunk_ms,
                                   live_ttl_s=int(settings.job_timeout_s + settings.result_ttl_s),
                                   result_ttl_s=settings.result_ttl_s)
        self.cancels = CancelWatcher(client)
        self.metrics = WorkerMetrics()
        self.metrics_server = None
        self.engine_lost: str | None = None  # why the engine process ended, if it did
        self.on_engine_lost: Callable[[str], None] = lambda message: None
        if settings.metrics_port:
            self.metrics_server = self.metrics.serve(settings.metrics_port)
            logger.info("worker %s: metrics on :%d/metrics", self.name, settings.metrics_port)
        try:
            if engine is None:
                self.scheduler: Any = EngineProcess(
                    settings, str(model_path), metrics=self.metrics, cancelled=self.cancels,
                    on_turn=self.publisher.wake, on_lost=self._lost_engine).start()
                engine = self.scheduler  # its backend, max_batch and max_context
            else:
                self.scheduler = worker_scheduler(engine, settings, cancelled=self.cancels,
                                                  on_turn=self.publisher.wake, metrics=self.metrics)
                self.scheduler.start()
        except BaseException:
            self._close_helpers()
            raise
        self.engine = engine
        self._prepare: GroupCommit[tuple[list, tuple[str, str] | None], Prepared] = GroupCommit(
            self._prepare_tasks)
        self.started_at = time.time()
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name="orcd-heartbeat", daemon=True)
        self._heartbeat.start()

    @classmethod
    def load(cls, settings: Settings, client: redis_lib.Redis, *, name: str | None = None) -> WorkerService:
        """Load the settings' model (tokenizer, then engine) and start serving threads."""
        from gguf_loader.assets import resolve_model
        from tokenizer import load_tokenizer

        sys.setswitchinterval(settings.gil_switch_us / 1e6)  # the scheduler waits on the GPU GIL-free
        path = resolve_model(settings.model)
        tokenizer = load_tokenizer(path)
        if settings.engine_process:
            return cls(settings, client, None, tokenizer, name=name, model_path=str(path))
        engine = load_worker_engine(settings, str(path))
        logger.info("worker loaded %s on %s (max_batch %d, max_context %d)", path, engine.backend,
                    engine.max_batch, engine.max_context)
        return cls(settings, client, engine, tokenizer, name=name)

    def close(self) -> None:
        """Stop serving; tasks still waiting for a job return "interrupted" (their message is requeued)."""
        self._stop.set()
        self.scheduler.stop(close_engine=True)  # the engine is closed on the thread that drove it
        self._close_helpers()
        try:
            self.client.delete(keys.worker(self.name))
        except redis_lib.RedisError as exc:
            logger.warning("worker %s: could not remove its heartbeat key: %s", self.name, exc)

    def _close_helpers(self) -> None:
        self.cancels.stop()
        self.publisher.close()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()

    def _lost_engine(self, message: str) -> None:
        """The engine process died (its jobs have failed): take no more jobs; tell the owner."""
        self.engine_lost = message
        self.on_engine_lost(message)

    # ---- one job

    def run_job(self, payload: Any) -> dict[str, Any]:
        """Run one job to its end (blocking); returns a summary. Never raises for a bad job."""
        [outcome] = self.run_jobs([payload]) or [{"job_id": None, "status": "dropped"}]
        return outcome

    def run_jobs(self, payloads: Any, *, group: tuple[str, str] | None = None) -> list[dict[str, Any]]:
        """Run jobs to their ends (blocking; a group message's jobs, or one job); a summary per job.

        One Redis round trip reads every job's log and cancel flag (and, for a `group` = (queue, group
        id), removes the group from the queue's count of waiting jobs: worker/enqueue.py); then each job
        is handed to the scheduler as if it had come alone, and this waits until every one has ended.
        Tasks that call while another task's jobs are being prepared are prepared together after it
        (`GroupCommit`: one round trip and one hand-over for all of them). A job that already ended (a
        redelivered group) is skipped; one that ran partly resumes after the seqs in its log. Never
        raises for a bad job."""
        if not isinstance(payloads, list):
            logger.error("dropping a group that is not a list of jobs: %.200r", payloads)
            return []
        outcomes, waiting = self._prepare((payloads, group))
        give_up = time.monotonic() + self.settings.job_timeout_s + 10.0
        for outcome, ended in waiting:
            log = job_logger(logger, outcome["job_id"], None)
            while not ended.wait(0.25):
                if self._stop.is_set():
                    log.warning("worker closing before the job ended")
                    outcome["status"] = "interrupted"
                    break
                if time.monotonic() > give_up:
                    log.error("no end after %.0f s", self.settings.job_timeout_s + 10.0)
                    outcome["status"] = "lost"
                    break
        return outcomes

    def _prepare_tasks(self, tasks: list[tuple[list, tuple[str, str] | None]]) -> list[Prepared]:
        """For each task's (payloads, group): its jobs' summaries and the events set at their ends; the
        logs and cancel flags of all read in one round trip, the requests handed over in one call."""
        usable = [[job for payload in payloads if (job := usable_job(payload)) is not None]
                  for payloads, _group in tasks]
        pipe = self.client.pipeline(transaction=False)  # one round trip: the logs and the cancel flags
        for jobs in usable:
            for _payload, job_id, _cid in jobs:
                pipe.xrange(keys.job_events(job_id), min=stream_id(1))
                pipe.exists(keys.job_cancel(job_id))
        for _payloads, group in tasks:
            if group is not None:
                pipe.hdel(keys.queue_groups(group[0]), group[1])
        found = iter(pipe.execute())
        prepared, requests = [], []
        for (payloads, _group), jobs in zip(tasks, usable, strict=True):
            outcomes = [{"job_id": None, "status": "dropped"}] * (len(payloads) - len(jobs))
            waiting = []
            for payload, job_id, cid in jobs:
                entries, cancelled = next(found), next(found)
                outcome, ended, request = self._start(payload, job_id, cid, entries, bool(cancelled))
                outcomes.append(outcome)
                if ended is not None:
                    waiting.append((outcome, ended))
                if request is not None:
                    requests.append(request)
            prepared.append((outcomes, waiting))
        self._hand_over(requests)  # together: the scheduler's next turn sees them all
        return prepared

    def _start(self, payload: dict, job_id: str, cid: str | None, entries: list,
               cancelled: bool) -> tuple[dict[str, Any], threading.Event | None, Request | None]:
        """Open the job's publisher; (its summary, the event set at its end, the request for the
        scheduler: None when the job ended here), or (summary, None, None) when it had already ended."""
        log = job_logger(logger, job_id, cid)
        state = log_state([parse_entry(fields) for _id, fields in entries])
        if state.ended:
            log.info("already ended (redelivered after its end); nothing to do")
            return {"job_id": job_id, "status": "already-ended"}, None, None
        ended = threading.Event()
        outcome: dict[str, Any] = {"job_id": job_id, "status": "lost"}

        def on_end(event: Event) -> None:
            outcome["status"] = event.type
            ended.set()

        jp = self.publisher.open(job_id, next_seq=state.last_seq + 1, skip_tokens=state.tokens_done,
                                 on_end=on_end, correlation_id=cid)
        if state.started:
            log.warning("redelivered (attempt %d): %d tokens already published, seq %d",
                        state.started + 1, state.tokens_done, state.last_seq)
        request = self._request(payload, jp, log, attempt=state.started + 1, cancelled=cancelled)
        return outcome, ended, request

    def _request(self, payload: dict, jp: JobPublisher, log: logging.LoggerAdapter, *, attempt: int,
                 cancelled: bool) -> Request | None:
        """The job's scheduler request; None when it ends here (invalid, or cancelled while queued)."""
        now = time.time()
        try:
            job = Job.model_validate(payload)
            if job.model is not None and keys.model_name(job.model) != self.settings.model_name:
                raise InvalidJob(f"job {job.id} is for model {job.model!r}; this worker serves "
                                 f"{self.settings.model_name!r}")
            prompt_ids = encode_job(job, self.tokenizer)
        except Exception as exc:  # bad input of any kind ends this job only
            error_type = "InvalidJob" if isinstance(exc, ValidationError) else type(exc).__name__
            log.warning("rejected: %s", exc)
            self.metrics.failed(error_type)
            self.publisher.call(functools.partial(jp.error, error_type, str(exc), now))
            return None
        if cancelled:
            log.info("cancelled before it started")
            self.metrics.finished("cancelled")
            usage = Usage(prompt_tokens=0, completion_tokens=0)
            self.publisher.call(functools.partial(jp.done, "cancelled", usage, None, now))
            return None
        log.info("attempt %d, %d prompt tokens, max_tokens %d, priority %d", attempt, len(prompt_ids),
                 job.params.max_tokens, job.priority)
        run = JobRun(self, job, jp, attempt=attempt, prompt_tokens=len(prompt_ids))
        deadline = now + self.settings.job_timeout_s
        if job.deadline is not None:
            deadline = min(deadline, job.deadline)
        params = job.params if job.params.seed is not None else job.params.model_copy(
            update={"seed": job_seed(job.id)})
        return Request(job_id=job.id, prompt_ids=prompt_ids, max_tokens=params.max_tokens, sink=run,
                       new_generation=functools.partial(new_generation, prompt_ids, params, self.tokenizer,
                                                        self.engine.max_context),
                       priority=job.priority, deadline=deadline, correlation_id=job.correlation_id,
                       submitted_at=job.created_at, params=params)

    def _hand_over(self, requests: list[Request]) -> None:
        if not requests:
            return
        try:
            self.scheduler.submit_many(requests)
        except WorkerError as exc:  # the engine is gone (closing, or its process died)
            now = time.time()
            for request in requests:
                run = request.sink
                run.log.error("not started: %s", exc)
                self.metrics.failed(type(exc).__name__)
                self.publisher.call(functools.partial(run.jp.error, type(exc).__name__, str(exc), now))

    # ---- liveness

    def heartbeat(self) -> dict[str, Any]:
        info = {"name": self.name, "model": self.settings.model_name, "model_path": str(self.settings.model),
                "queue": self.settings.queue_name, "gpu": self.settings.gpu, "backend": self.engine.backend,
                "max_batch": self.engine.max_batch, "max_context": self.engine.max_context,
                "active": self.scheduler.n_running, "queued": self.scheduler.n_waiting,
                "host": socket.gethostname(), "pid": os.getpid(), "started_at": self.started_at,
                "ts": time.time()}
        if self.engine.backend == "cuda":
            pinned = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
            memory = gpu_memory(pinned or str(self.settings.gpu))  # the physical id (or UUID)
            if memory is not None:
                info.update(free_vram=memory[0], total_vram=memory[1])
        return info

    def _beat(self) -> None:
        ttl = max(1, int(3 * self.settings.heartbeat_s))
        while not self._stop.is_set():
            try:
                pipe = self.client.pipeline(transaction=True)
                pipe.hset(keys.worker(self.name), mapping={k: str(v) for k, v in self.heartbeat().items()})
                pipe.expire(keys.worker(self.name), ttl)
                pipe.execute()
            except redis_lib.RedisError as exc:
                logger.warning("worker %s: heartbeat failed: %s", self.name, exc)
            self._stop.wait(self.settings.heartbeat_s)


def gpu_memory(device: str) -> tuple[int, int] | None:
    """(free, total) bytes of a GPU (NVML index or UUID) from nvidia-smi, without touching the worker's
    CUDA context from this thread; None where nvidia-smi is missing or fails."""
    try:
        out = subprocess.run(["nvidia-smi", "-i", device, "--query-gpu=memory.free,memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5)
        free, total = (int(x) << 20 for x in out.stdout.strip().split(","))
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return free, total


def job_seed(job_id: str) -> int:
    """The seed of a job submitted without one: fixed by its id, so a redelivered run reproduces it."""
    return int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:6], "big")


def default_worker_name(settings: Settings) -> str:
    return f"{settings.model_name}-gpu{settings.gpu}@{socket.gethostname()}-{os.getpid()}"
