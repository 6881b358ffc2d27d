"""Putting jobs on their models' queues: one job per Celery message, or many jobs per message (groups).

Two round trips whatever the number of jobs:
1. (one pipeline) every queue's depth in jobs and a claim on every job's id (`HSETNX` of its record).
   A claim that fails (the id is in use) or a queue that cannot take the jobs asked of it (`QueueFull`:
   its depth plus the new jobs would pass `max_queue`) releases the claims made and writes nothing.
2. (one MULTI/EXEC) every job's `queued` event (XADD, then record, TTLs and PUBLISH: streams.py) and the
   Celery messages, added to the same transaction by the broker's `enqueue_into` (worker/broker.py): a
   job's record and its message land together or not at all. A sender that cannot join the transaction
   (tests, benchmarks) sends after it.

Depth in jobs: Celery's lists hold one message per job, except group messages, which hold several.
Each group is also written to the queue's `orcd:queue:<queue>:groups` hash (group id → job count) with
its message, and the worker that takes the group deletes the entry (HDEL: a redelivery cannot count it
twice), so depth = messages + Σ (count − 1) over the hash. A group taken, lost with its worker and
redelivered is counted as one job until it is taken again; the hash expires `live_ttl_s` after its last
write. Like the single-job check, the check and the write are two steps: concurrent submitters may
overshoot the limit by what they send at once.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import redis as redis_lib

from . import keys
from .errors import InvalidJob, QueueFull
from .schemas import Job, Queued
from .streams import record_appended, stream_id

Sender = Callable[[Job, str, int], None]  # (job, queue, celery priority)
GroupSender = Callable[[Sequence[Job], str, int, str], None]  # (jobs, queue, celery priority, group id)


@dataclass(frozen=True)
class Message:
    """One Celery message to send: a lone job (`group` None) or a group of jobs of one queue and priority."""

    queue: str
    jobs: tuple[Job, ...]
    group: str | None = None

    @property
    def priority(self) -> int:
        return keys.celery_priority(self.jobs[0].priority)


def even_chunks(items: Sequence, size: int) -> list[Sequence]:
    """`items` cut into the fewest chunks of at most `size`, their lengths differing by at most one."""
    n_chunks = -(-len(items) // max(1, size))
    base, extra = divmod(len(items), n_chunks) if n_chunks else (0, 0)
    chunks, start = [], 0
    for k in range(n_chunks):
        end = start + base + (k < extra)
        chunks.append(items[start:end])
        start = end
    return chunks


def plan_groups(jobs: Sequence[tuple[Job, str]], group_size: Mapping[str, int]) -> list[Message]:
    """Messages for (job, queue) pairs: per queue and priority (in order of first appearance), groups of
    at most `group_size[queue]` jobs, as even as possible; a group of one job is a lone-job message."""
    by_key: dict[tuple[str, int], list[Job]] = {}
    for job, queue in jobs:
        by_key.setdefault((queue, job.priority), []).append(job)
    messages = []
    for (queue, _priority), members in by_key.items():
        for chunk in even_chunks(members, group_size[queue]):
            group = f"group-{uuid.uuid4().hex}" if len(chunk) > 1 else None
            messages.append(Message(queue, tuple(chunk), group))
    return messages


def depth_commands(pipe: redis_lib.client.Pipeline, queue: str) -> int:
    """Queue the commands whose results `depth_from` reads; returns how many results they take."""
    for name in keys.queue_lists(queue):
        pipe.llen(name)
    pipe.hvals(keys.queue_groups(queue))
    return len(keys.PRIORITY_STEPS) + 1


def depth_from(results: Sequence) -> int:
    """Jobs waiting in a queue, from `depth_commands`' results: messages, plus each group's extra jobs."""
    *lengths, groups = results
    return sum(lengths) + sum(int(n) - 1 for n in groups)


def enqueue(client: redis_lib.Redis, messages: Sequence[Message], *, max_queue: int, live_ttl_s: int,
            result_ttl_s: int, send: Sender, send_group: GroupSender | None, pipelined: bool,
            lock: threading.Lock) -> None:
    """Claim, check and write every job of `messages` (all or none; module docstring). `pipelined`: the
    senders add their messages to the transaction (worker/broker.py) instead of sending them; `lock`
    is held while they send (one Celery producer at a time)."""
    from .broker import enqueue_into

    jobs = [job for message in messages for job in message.jobs]
    queues = list(dict.fromkeys(message.queue for message in messages))
    pipe = client.pipeline(transaction=False)
    spans = [depth_commands(pipe, queue) for queue in queues]
    for job in jobs:
        pipe.hsetnx(keys.job_meta(job.id), "job", job.model_dump_json())
    results = pipe.execute()
    claims = results[sum(spans):]
    claimed = [job.id for job, ok in zip(jobs, claims, strict=True) if ok]

    def release() -> None:
        if claimed:
            client.delete(*(keys.job_meta(job_id) for job_id in claimed))

    taken = [k for k, ok in enumerate(claims) if not ok]
    if taken:
        release()
        which = f"job {taken[0]}: " if len(jobs) > 1 else ""
        raise InvalidJob(f"{which}job id {jobs[taken[0]].id!r} is already in use")
    start = 0
    for queue, span in zip(queues, spans, strict=True):
        depth, start = depth_from(results[start:start + span]), start + span
        asked = sum(len(m.jobs) for m in messages if m.queue == queue)
        if depth + asked > max_queue:
            release()
            raise QueueFull(queue, depth, max_queue)
    pipe = client.pipeline(transaction=True)
    for job, queue in ((job, m.queue) for m in messages for job in m.jobs):
        queued = Queued(job_id=job.id, seq=1, model=job.model, queue=queue, priority=job.priority,
                        correlation_id=job.correlation_id)
        pipe.xadd(keys.job_events(job.id), {"data": queued.model_dump_json()}, id=stream_id(1))
        record_appended(pipe, queued, live_ttl_s=live_ttl_s, result_ttl_s=result_ttl_s)
    for message in messages:
        if message.group is not None and send_group is not None:
            pipe.hset(keys.queue_groups(message.queue), message.group, len(message.jobs))
            pipe.expire(keys.queue_groups(message.queue), live_ttl_s)
    with lock:
        if pipelined:
            try:
                with enqueue_into(pipe):
                    _send(messages, send, send_group)
            except BaseException:  # nothing was written but the claims
                release()
                raise
        pipe.execute()  # (a failure here may come after Redis ran it: the claims stay)
        if not pipelined:
            _send(messages, send, send_group)


def _send(messages: Sequence[Message], send: Sender, send_group: GroupSender | None) -> None:
    for message in messages:
        if message.group is not None and send_group is not None:
            send_group(message.jobs, message.queue, message.priority, message.group)
        else:
            for job in message.jobs:
                send(job, message.queue, keys.celery_priority(job.priority))
