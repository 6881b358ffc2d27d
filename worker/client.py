"""Client library: submit jobs, stream their events (sync or async), wait for results, cancel.

    client = Client("redis://localhost:6379/0")
    handle = client.submit(Job(prompt="Hello", params=SamplingParams(max_tokens=32, seed=1)))
    for event in handle.stream():          # or: async for event in handle.astream()
        ...
    print(handle.result().text)

A job is validated before anything is enqueued (`InvalidJob`), and refused with `QueueFull` when its
model's queue already holds `max_queue` jobs. `submit_many(jobs)` enqueues many jobs at once, several
per Celery message (worker/enqueue.py), each with its own id, events, cancel and redelivery. An
unreachable Redis is `BrokerUnavailable`; a stream whose connection drops reconnects with backoff for
`reconnect_s`, resuming after its last seq.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis as redis_lib
from kombu.exceptions import OperationalError
from pydantic import ValidationError

from . import keys
from .enqueue import GroupSender, Message, Sender, depth_commands, depth_from, enqueue, plan_groups
from .errors import (
    BrokerUnavailable,
    InvalidJob,
    JobFailed,
    JobNotFound,
    JobTimeout,
    QueueFull,
    SettingsError,
)
from .group_commit import GroupCommit
from .schemas import Done, Error, Event, Job, Timings, Tokens, Usage
from .settings import Settings, load_settings
from .streams import afollow, follow
from .tasks import GENERATE, GENERATE_MANY

logger = logging.getLogger(__name__)

MAX_CONNECTIONS = 4096  # one per stream followed at once (each blocks on its own connection)

# what an unreachable broker raises: redis-py's own errors, kombu's when Celery publishes
_UNREACHABLE = (redis_lib.ConnectionError, redis_lib.TimeoutError, OperationalError)


@contextmanager
def broker_errors(what: str) -> Iterator[None]:
    """Raise `BrokerUnavailable` naming `what` (a job id, an operation) for an unreachable Redis."""
    try:
        yield
    except BrokerUnavailable:
        raise
    except _UNREACHABLE as exc:
        raise BrokerUnavailable(f"{what}: Redis does not answer: {exc}") from exc


class Reconnect:
    """Backoff of one stream's reconnects: `BrokerUnavailable` once the connection has been lost for
    `limit_s` without an event in between; logs once per outage."""

    def __init__(self, job_id: str, limit_s: float) -> None:
        self.job_id, self.limit_s = job_id, limit_s
        self.lost_at: float | None = None
        self.delay_s = 0.05

    def received(self) -> None:
        if self.lost_at is not None:
            logger.warning("job %s: stream reconnected", self.job_id)
        self.lost_at, self.delay_s = None, 0.05

    def lost(self, exc: Exception, last_seq: int) -> float:
        """The pause before the next attempt; raises `BrokerUnavailable` once `limit_s` has passed."""
        now = time.monotonic()
        if self.lost_at is None:
            self.lost_at = now
            logger.warning("job %s: stream lost its connection after seq %d (%s); reconnecting for %g s",
                           self.job_id, last_seq, exc, self.limit_s)
        if now - self.lost_at >= self.limit_s:
            raise BrokerUnavailable(f"job {self.job_id}: Redis did not answer for {self.limit_s:g} s "
                                    f"(stream stopped after seq {last_seq}): {exc}") from exc
        delay, self.delay_s = self.delay_s, min(2 * self.delay_s, 1.0)
        return min(delay, self.limit_s - (now - self.lost_at))


@dataclass
class JobResult:
    """A finished job, assembled from its events."""

    job_id: str
    text: str
    token_ids: list[int]
    finish_reason: str
    usage: Usage
    timings: Timings | None
    events: list[Event] = field(repr=False)


def assemble(job_id: str, events: list[Event]) -> JobResult:
    """The result of a job from its complete event list; `JobFailed` if it ended with an error."""
    end = events[-1] if events else None
    if isinstance(end, Error):
        raise JobFailed(job_id, end.error_type, end.message)
    if not isinstance(end, Done):
        raise JobTimeout(f"job {job_id} has not ended")
    chunks = [e for e in events if isinstance(e, Tokens)]
    return JobResult(job_id, "".join(c.text for c in chunks), [i for c in chunks for i in c.ids],
                     end.finish_reason, end.usage, end.timings, events)


def celery_senders(settings: Settings) -> tuple[Sender, GroupSender]:
    """Senders of `orcd.generate` (one job) and `orcd.generate_many` (a group) through Celery; both
    `pipelined`: called inside `broker.enqueue_into`, they add their message to the client's transaction."""
    from .app import make_app

    app = make_app(settings)

    def send(job: Job, queue: str, priority: int) -> None:
        app.send_task(GENERATE, args=[job.model_dump(mode="json")], queue=queue, priority=priority,
                      task_id=job.id, argsrepr=f"[job {job.id}]", kwargsrepr="{}")  # given: Celery's
        # own repr of the whole job (saferepr, for monitors) took ~1.2 ms of every submit

    def send_group(jobs: Sequence[Job], queue: str, priority: int, group: str) -> None:
        app.send_task(GENERATE_MANY, args=[[job.model_dump(mode="json") for job in jobs]],
                      kwargs={"group": group, "queue": queue}, queue=queue, priority=priority, task_id=group,
                      argsrepr=f"[{len(jobs)} jobs: {jobs[0].id} ...]", kwargsrepr=f"{{group: {group}}}")

    send.pipelined = send_group.pipelined = True  # type: ignore[attr-defined]
    return send, send_group


class Client:
    """Talks to the queue's Redis; `settings` default from ``ORCD_*`` (redis_url overrides)."""

    def __init__(self, redis_url: str | None = None, *, settings: Settings | None = None,
                 redis: redis_lib.Redis | None = None, sender: Sender | None = None,
                 group_sender: GroupSender | None = None, reconnect_s: float = 10.0) -> None:
        """`sender` / `group_sender`: how messages are sent (default Celery; tests and benchmarks pass
        their own; without a group sender `submit_many` sends one message per job)."""
        self.settings = settings or load_settings(redis_url=redis_url)
        if redis_url and self.settings.redis_url != redis_url:
            self.settings = self.settings.model_copy(update={"redis_url": redis_url})
        if redis is None and not self.settings.redis_url:
            raise SettingsError("Client needs a Redis URL (ORCD_REDIS_URL or redis_url=)")
        self.redis = redis or redis_lib.Redis.from_url(self.settings.redis_url,
                                                       max_connections=MAX_CONNECTIONS)
        self._send, self._send_group = (sender, group_sender) if sender else celery_senders(self.settings)
        self._send_lock = threading.Lock()  # one Celery producer at a time (batch submits from threads)
        # concurrent `submit` calls that meet one in flight are enqueued together in the next transaction
        self._submits: GroupCommit[tuple[Job, str], InvalidJob | QueueFull | None] = GroupCommit(
            self._submit_together)
        self._aredis: Any = None
        self.reconnect_s = reconnect_s  # how long a stream retries a lost connection

    def close(self) -> None:
        self.redis.close()

    # ---- submit

    def queue_depth(self, queue: str) -> int:
        """Jobs waiting in `queue` (a group message counts its jobs)."""
        pipe = self.redis.pipeline(transaction=False)
        depth_commands(pipe, queue)
        return depth_from(pipe.execute())

    def _normalise(self, job: Job | dict[str, Any], index: int | None = None) -> tuple[Job, str]:
        """The validated job with its model filled in, and its queue (`InvalidJob` naming `index`)."""
        try:
            job = job if isinstance(job, Job) else Job.model_validate(job)
        except ValidationError as exc:
            where = "" if index is None else f" {index}"
            raise InvalidJob(f"invalid job{where}: {exc}") from None
        model = keys.model_name(job.model or self.settings.model)
        job = job.model_copy(update={"model": model})
        return job, self.settings.queue_name if model == self.settings.model_name else keys.queue(model)

    def submit(self, job: Job | dict[str, Any]) -> JobHandle:
        """Validate, record and enqueue `job` on its model's queue. Calls from other threads that arrive
        while one is being written go out together in the next transaction, grouped as `submit_many`
        groups jobs (group commit: a lone call waits for nothing and is one message of its own); each
        job keeps its own handle, events, cancel and redelivery, and each call its own error."""
        job, queue = self._normalise(job)
        with broker_errors(f"job {job.id}: submit"):
            refused = self._submits((job, queue))
        if refused is not None:
            raise refused
        return JobHandle(self, job.id)

    def _submit_together(self, items: list[tuple[Job, str]]) -> list[InvalidJob | QueueFull | None]:
        """The jobs of concurrent `submit` calls in one transaction, in `submit_many`'s groups; if it
        refuses them (an id in use, a full queue), each alone, so that a refusal is only its own job's."""
        if len(items) > 1:
            try:
                counts = Counter(queue for _job, queue in items)
                sizes = {queue: self.group_size(queue, n) for queue, n in counts.items()}
                self._enqueue(plan_groups(items, sizes))
                return [None] * len(items)
            except (InvalidJob, QueueFull):
                pass
        refused: list[InvalidJob | QueueFull | None] = []
        for job, queue in items:
            try:
                self._enqueue([Message(queue, (job,))])
                refused.append(None)
            except (InvalidJob, QueueFull) as exc:
                refused.append(exc)
        return refused

    def submit_many(self, jobs: Sequence[Job | dict[str, Any]], *,
                    group_size: int | None = None) -> list[JobHandle]:
        """Validate every job, then record and enqueue them all (or none), several per Celery message.

        Jobs are grouped per queue and priority into messages of at most `group_size` jobs (default: the
        smallest `max_batch` among the queue's live workers, and no more than an even share per worker,
        so that a fleet still splits a burst; `settings.max_batch` when no worker is seen), as even as
        possible. Each job keeps its own id, events, cancel and redelivery; `QueueFull` counts jobs.
        `InvalidJob` names the job's index (a field, or an id in use); then `QueueFull`, `BrokerUnavailable`.
        """
        pairs = [self._normalise(job, k) for k, job in enumerate(jobs)]
        seen: dict[str, int] = {}
        for k, (job, _queue) in enumerate(pairs):
            if seen.setdefault(job.id, k) != k:
                raise InvalidJob(f"job {k}: job id {job.id!r} is also job {seen[job.id]}'s")
        if not pairs:
            return []
        with broker_errors(f"{len(pairs)} jobs: submit_many"):
            counts = Counter(queue for _job, queue in pairs)
            sizes = {queue: group_size or self.group_size(queue, n) for queue, n in counts.items()}
            self._enqueue(plan_groups(pairs, sizes))
        return [JobHandle(self, job.id) for job, _queue in pairs]

    def group_size(self, queue: str, n_jobs: int | None = None) -> int:
        """Jobs per group message for `queue`: the smallest max_batch of its live workers, and at most
        an even share of `n_jobs` per worker (heartbeats; `settings.max_batch`, one worker, if none)."""
        batches = [int(w["max_batch"]) for w in self.workers()
                   if w.get("queue") == queue and "max_batch" in w]
        size = min(batches) if batches else self.settings.max_batch
        if n_jobs:
            size = min(size, -(-n_jobs // max(1, len(batches))))
        return max(1, size)

    def _enqueue(self, messages: list[Message]) -> None:
        enqueue(self.redis, messages, max_queue=self.settings.max_queue,
                live_ttl_s=int(self.settings.job_timeout_s + self.settings.result_ttl_s),
                result_ttl_s=self.settings.result_ttl_s, send=self._send, send_group=self._send_group,
                pipelined=getattr(self._send, "pipelined", False), lock=self._send_lock)

    # ---- follow

    def stream(self, job_id: str, after: int = 0, *, timeout_s: float | None = None) -> Iterator[Event]:
        """Every event of the job after seq `after`, in order, no gap, no duplicate; ends at done/error.

        A lost connection is retried with backoff, resuming after the last seq received (lossless:
        the log holds every event); `BrokerUnavailable` after `reconnect_s` without success."""
        retry = Reconnect(job_id, self.reconnect_s)
        while True:
            try:
                for event in follow(self.redis, job_id, after, timeout_s=timeout_s):
                    after = event.seq
                    retry.received()
                    yield event
                return
            except _UNREACHABLE as exc:
                time.sleep(retry.lost(exc, after))

    async def astream(self, job_id: str, after: int = 0, *,
                      timeout_s: float | None = None) -> AsyncIterator[Event]:
        """`stream` for asyncio (one redis.asyncio client per event loop)."""
        import asyncio

        import redis.asyncio as aredis

        loop = asyncio.get_running_loop()
        if self._aredis is None or self._aredis[0] is not loop:
            self._aredis = (loop, aredis.Redis.from_url(self.settings.redis_url,
                                                            max_connections=MAX_CONNECTIONS))
        retry = Reconnect(job_id, self.reconnect_s)
        while True:
            try:
                async for event in afollow(self._aredis[1], job_id, after, timeout_s=timeout_s):
                    after = event.seq
                    retry.received()
                    yield event
                return
            except _UNREACHABLE as exc:
                await asyncio.sleep(retry.lost(exc, after))

    def result(self, job_id: str, *, timeout_s: float | None = None) -> JobResult:
        return assemble(job_id, list(self.stream(job_id, timeout_s=timeout_s)))

    async def aresult(self, job_id: str, *, timeout_s: float | None = None) -> JobResult:
        return assemble(job_id, [e async for e in self.astream(job_id, timeout_s=timeout_s)])

    # ---- control and inspection

    def cancel(self, job_id: str) -> bool:
        """Ask the job to stop; False if it had already ended. A queued job then never starts."""
        with broker_errors(f"job {job_id}: cancel"):
            status = self.redis.hget(keys.job_meta(job_id), "status")
        if status is None:
            raise JobNotFound(f"job {job_id} not found (never submitted, or expired)")
        if status.decode() in ("done", "error", "cancelled"):
            return False
        with broker_errors(f"job {job_id}: cancel"):
            self.redis.set(keys.job_cancel(job_id), b"1",
                           ex=int(self.settings.job_timeout_s + self.settings.result_ttl_s))
        return True

    def status(self, job_id: str) -> dict[str, str]:
        with broker_errors(f"job {job_id}: status"):
            meta = self.redis.hgetall(keys.job_meta(job_id))
        if not meta:
            raise JobNotFound(f"job {job_id} not found (never submitted, or expired)")
        return {k.decode(): v.decode() for k, v in meta.items()}

    def workers(self) -> list[dict[str, str]]:
        """Heartbeats of the live workers."""
        names = sorted(self.redis.scan_iter(match=keys.WORKER_PATTERN, count=100))
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(name)
        return [{k.decode(): v.decode() for k, v in beat.items()} for beat in pipe.execute() if beat]

    def wait_for_worker(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.workers():
            if time.monotonic() > deadline:
                raise JobTimeout(f"no worker heartbeat within {timeout_s:g} s")
            time.sleep(0.1)


class JobHandle:
    """A submitted job."""

    def __init__(self, client: Client, job_id: str) -> None:
        self.client, self.id = client, job_id

    def stream(self, after: int = 0, *, timeout_s: float | None = None) -> Iterator[Event]:
        return self.client.stream(self.id, after, timeout_s=timeout_s)

    def astream(self, after: int = 0, *, timeout_s: float | None = None) -> AsyncIterator[Event]:
        return self.client.astream(self.id, after, timeout_s=timeout_s)

    def result(self, *, timeout_s: float | None = None) -> JobResult:
        return self.client.result(self.id, timeout_s=timeout_s)

    async def aresult(self, *, timeout_s: float | None = None) -> JobResult:
        return await self.client.aresult(self.id, timeout_s=timeout_s)

    def cancel(self) -> bool:
        return self.client.cancel(self.id)
