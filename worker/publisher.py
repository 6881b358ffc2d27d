"""Turning a running job's steps into events: numbering, token coalescing, and resuming after a crash.

`JobPublisher` is pure (time is passed in): it numbers a job's events from the seq after those already
in the log, drops the first `skip_tokens` tokens (a redelivered job regenerates them, seeded, but an
earlier attempt already published them), and coalesces tokens into chunks: a chunk is due when it
holds `chunk_tokens` tokens, when its oldest token is `chunk_ms` old, or at once for the job's very
first token (time to first token matters more than message count).

`Publisher` is the thread that writes: the scheduler hands it steps without waiting on Redis, and it
writes every due chunk of every job in two round trips (streams.append_events).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis as redis_lib

from .schemas import Done, Error, Event, Started, Timings, TokenLogprob, Tokens, Usage
from .streams import append_events

logger = logging.getLogger(__name__)


class JobPublisher:
    """Events of one job attempt, in seq order, chunked."""

    def __init__(self, job_id: str, *, next_seq: int, skip_tokens: int, chunk_tokens: int,
                 chunk_ms: float, correlation_id: str | None = None) -> None:
        self.job_id = job_id
        self.correlation_id = correlation_id  # copied into every event
        self.next_seq = next_seq
        self.skip_tokens = skip_tokens
        self.chunk_tokens = chunk_tokens
        self.chunk_s = chunk_ms / 1000.0
        self.n_tokens = 0  # tokens seen this attempt, skipped ones included
        self._n_out = 0  # of those, the ones skipped or already cut into events
        self._ready: list[Event] = []
        self._buffer: list[tuple[int | None, str, TokenLogprob | None]] = []  # (id, text, logprob)
        self._first_at: float | None = None  # when the oldest buffered token arrived
        self.ended = False

    def _head(self, now: float) -> dict:
        """The fields every event of this job shares, numbered with the next seq."""
        self.next_seq += 1
        return {"job_id": self.job_id, "correlation_id": self.correlation_id, "seq": self.next_seq - 1,
                "ts": now}

    def started(self, worker: str, queue_ms: float, attempt: int, now: float) -> None:
        self._ready.append(Started(**self._head(now), worker=worker, queue_ms=queue_ms, attempt=attempt))

    def token(self, token_id: int | None, text: str, logprobs: TokenLogprob | None, now: float) -> None:
        """One step's output; `token_id` None is text released at the end without a token."""
        if token_id is not None:
            self.n_tokens += 1
        if self.n_tokens <= self.skip_tokens and (token_id is not None or self.n_tokens < self.skip_tokens):
            self._n_out = self.n_tokens
            return
        if token_id is None and not text:
            return
        if not self._buffer:
            self._first_at = now
        self._buffer.append((token_id, text, logprobs))
        if token_id is not None and self.n_tokens == 1:
            self._chunk(now)  # the first token goes out alone, at once

    def _chunk(self, now: float) -> None:
        """Buffered steps → tokens events of at most `chunk_tokens` ids each."""
        while self._buffer:
            n, cut = 0, 0
            while cut < len(self._buffer) and (n < self.chunk_tokens or self._buffer[cut][0] is None):
                n += self._buffer[cut][0] is not None
                cut += 1
            part, self._buffer = self._buffer[:cut], self._buffer[cut:]
            ids = [token_id for token_id, _, _ in part if token_id is not None]
            logprobs = [lp for _, _, lp in part if lp is not None]
            self._ready.append(Tokens(**self._head(now), index=self._n_out, ids=ids,
                                      text="".join(text for _, text, _ in part), logprobs=logprobs or None))
            self._n_out += len(ids)
        self._first_at = None

    def done(self, finish_reason: str, usage: Usage, timings: Timings | None, now: float) -> None:
        self._chunk(now)
        self._ready.append(Done(**self._head(now), finish_reason=finish_reason, usage=usage,
                                timings=timings))
        self.ended = True

    def error(self, error_type: str, message: str, now: float) -> None:
        self._chunk(now)
        self._ready.append(Error(**self._head(now), error_type=error_type, message=message))
        self.ended = True

    def due_at(self) -> float | None:
        """When the buffered chunk must go out (None: nothing buffered)."""
        if self._ready:
            return 0.0
        if not self._buffer:
            return None
        if self.n_tokens - self._n_out >= self.chunk_tokens:
            return 0.0
        assert self._first_at is not None
        return self._first_at + self.chunk_s

    def take(self, now: float, force: bool = False) -> list[Event]:
        """Events to write now: those ready, plus the chunk if it is due (or `force`)."""
        due = self.due_at()
        if due is not None and (force or due <= now):
            self._chunk(now)
        ready, self._ready = self._ready, []
        return ready


class Publisher:
    """Background writer for every job of a worker; methods are safe to call from any thread.

    Ops (JobPublisher method calls) run on the publisher thread in submission order. The scheduler
    queues a whole turn's steps with `call(op, wake=False)` and then calls `wake()` once, so the
    writer wakes once per engine step, not once per token.
    """

    def __init__(self, client: redis_lib.Redis, *, chunk_tokens: int, chunk_ms: float, live_ttl_s: int,
                 result_ttl_s: int, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.chunk_tokens, self.chunk_ms = chunk_tokens, chunk_ms
        self.live_ttl_s, self.result_ttl_s = live_ttl_s, result_ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        self._ops: list[Callable[[], None]] = []
        self._wake = threading.Event()
        self._stopping = False
        self._jobs: dict[str, tuple[JobPublisher, Callable[[Event], None]]] = {}
        self._pending: list[Event] = []  # taken but not yet written (Redis was unreachable)
        self._thread = threading.Thread(target=self._run, name="orcd-publisher", daemon=True)
        self._thread.start()

    def open(self, job_id: str, *, next_seq: int, skip_tokens: int, on_end: Callable[[Event], None],
             correlation_id: str | None = None) -> JobPublisher:
        """Register a job attempt; `on_end(event)` runs once its done/error event is in Redis."""
        job = JobPublisher(job_id, next_seq=next_seq, skip_tokens=skip_tokens, chunk_tokens=self.chunk_tokens,
                           chunk_ms=self.chunk_ms, correlation_id=correlation_id)
        self.call(lambda: self._jobs.__setitem__(job_id, (job, on_end)))
        return job

    def call(self, op: Callable[[], None], *, wake: bool = True) -> None:
        """Run `op` on the publisher thread after the ops queued before it."""
        with self._lock:
            self._ops.append(op)
        if wake:
            self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued, then stop."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout_s)

    def _next_wakeup(self, now: float) -> float:
        dues = [d for job, _ in self._jobs.values() if (d := job.due_at()) is not None]
        if self._pending:
            dues.append(now + 0.5)
        return max(0.0, min(dues) - now) if dues else 1.0

    def _run(self) -> None:
        while True:
            self._wake.wait(self._next_wakeup(self.clock()))
            self._wake.clear()
            stopping = self._stopping
            with self._lock:
                ops, self._ops = self._ops, []
            for op in ops:
                op()
            self._flush(force=stopping)
            if stopping:
                if self._pending:
                    logger.error("publisher stopped with %d events unwritten", len(self._pending))
                return

    def _flush(self, force: bool = False) -> None:
        now = self.clock()
        for job, _ in self._jobs.values():
            self._pending.extend(job.take(now, force))
        if not self._pending:
            return
        try:
            append_events(self.client, self._pending, live_ttl_s=self.live_ttl_s,
                          result_ttl_s=self.result_ttl_s)
        except redis_lib.RedisError as exc:
            logger.warning("publisher: %d events not written yet (%s); retrying", len(self._pending), exc)
            time.sleep(0.2)
            return
        written, self._pending = self._pending, []
        for event in written:
            if event.type in ("done", "error"):
                _job, on_end = self._jobs.pop(event.job_id, (None, None))
                if on_end is not None:
                    on_end(event)
