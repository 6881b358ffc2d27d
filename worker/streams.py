"""A job's events in Redis: appended to a Stream (the replay log) and published on a channel (live).

Writing: each event is XADDed with the explicit stream id ``0-<seq>``, so Redis itself refuses a seq
that is already there (a re-run after a crash re-sends nothing twice), and only an event that was
appended is then PUBLISHed. Reading: `follow` subscribes first, replays the log after the reader's
last seq, then follows the channel; an event whose seq is not the next one is either a duplicate
(dropped) or reveals a gap (filled from the log, which always holds every published event, because
the XADD precedes the PUBLISH). The channel is a shortcut; the log is the truth. A reader that
resumes after the job's last event (the log's last entry is its done/error) gets nothing and ends at
once, instead of waiting for events that will never come.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass

import redis as redis_lib

from . import keys
from .errors import JobNotFound, JobTimeout, StreamGap
from .schemas import TERMINAL, Event, Tokens, parse_event

logger = logging.getLogger(__name__)

_STATUS = {"queued": "queued", "started": "running", "error": "error"}


def stream_id(seq: int) -> str:
    return f"0-{seq}"


def _is_duplicate(result: object) -> bool:
    return isinstance(result, redis_lib.ResponseError) and "equal or smaller" in str(result)


def append_events(client: redis_lib.Redis, events: Sequence[Event], *, live_ttl_s: int,
                  result_ttl_s: int) -> list[bool]:
    """Append `events` (in seq order per job) and publish those that were new; True per new event.

    Two round trips: the XADDs, then PUBLISH + job-status updates + TTLs for what was appended.
    A job's records expire `result_ttl_s` after its terminal event, `live_ttl_s` after any other.
    """
    pipe = client.pipeline(transaction=False)
    for event in events:
        pipe.xadd(keys.job_events(event.job_id), {"data": event.model_dump_json()}, id=stream_id(event.seq))
    results = pipe.execute(raise_on_error=False)
    appended: list[bool] = []
    for result in results:
        if isinstance(result, Exception) and not _is_duplicate(result):
            raise result
        appended.append(not isinstance(result, Exception))
    pipe = client.pipeline(transaction=False)
    for event, new in zip(events, appended, strict=True):
        if not new:
            logger.info("job %s cid %s: seq %d already in the log, not re-sent", event.job_id,
                        event.correlation_id or "-", event.seq)
            continue
        record_appended(pipe, event, live_ttl_s=live_ttl_s, result_ttl_s=result_ttl_s)
    pipe.execute()
    return appended


def record_appended(pipe: redis_lib.client.Pipeline, event: Event, *, live_ttl_s: int,
                    result_ttl_s: int) -> None:
    """Queue what follows an event's XADD: PUBLISH, the job record's status, the TTLs."""
    pipe.publish(keys.job_channel(event.job_id), event.model_dump_json())
    meta = keys.job_meta(event.job_id)
    status = _STATUS.get(event.type)
    if event.type == "done":
        status = "cancelled" if event.finish_reason == "cancelled" else "done"
    fields = {"status": status, f"{event.type}_at": event.ts} if status else {}
    if event.type == "queued":
        fields["queue"] = event.queue
    elif event.type == "started":
        fields["worker"] = event.worker
    if fields:
        pipe.hset(meta, mapping=fields)  # one command per event
    ttl = result_ttl_s if event.type in TERMINAL else live_ttl_s
    for key in (keys.job_events(event.job_id), meta, keys.job_cancel(event.job_id)):
        pipe.expire(key, ttl)


def parse_entry(fields: dict) -> Event:
    """The event in a stream entry's fields."""
    return parse_event(fields[b"data" if b"data" in fields else "data"])


def read_log(client: redis_lib.Redis, job_id: str, after: int = 0) -> list[Event]:
    """The job's events with seq > `after`, in order."""
    entries = client.xrange(keys.job_events(job_id), min=stream_id(after + 1))
    return [parse_entry(fields) for _id, fields in entries]


def _ended_before(job_id: str, last_entries: list, meta_exists: bool) -> bool:
    """After a replay that found nothing new: True when the job's log already ends with done/error
    (so it ended at or before the resume point and nothing more will come). `JobNotFound` when the
    job has neither a log nor a record."""
    if not last_entries:
        if not meta_exists:
            raise JobNotFound(f"job {job_id} not found (never submitted, or expired)")
        return False
    return parse_entry(last_entries[0][1]).type in TERMINAL


def _check_end(client: redis_lib.Redis, job_id: str) -> bool:
    pipe = client.pipeline(transaction=False)
    pipe.xrevrange(keys.job_events(job_id), count=1)
    pipe.exists(keys.job_meta(job_id))
    return _ended_before(job_id, *pipe.execute())


async def _acheck_end(client, job_id: str) -> bool:
    pipe = client.pipeline(transaction=False)
    pipe.xrevrange(keys.job_events(job_id), count=1)
    pipe.exists(keys.job_meta(job_id))
    return _ended_before(job_id, *await pipe.execute())


@dataclass(frozen=True)
class LogState:
    """What earlier attempts of a job left in its log."""

    last_seq: int = 0
    tokens_done: int = 0
    ended: bool = False
    started: int = 0  # attempts that published `started`


def log_state(events: Sequence[Event]) -> LogState:
    last_seq, tokens_done, ended, started = 0, 0, False, 0
    for event in events:
        last_seq = event.seq
        if isinstance(event, Tokens):
            tokens_done = event.index + len(event.ids)
        ended = ended or event.type in TERMINAL
        started += event.type == "started"
    return LogState(last_seq, tokens_done, ended, started)


class SeqTracker:
    """Orders one job's events for a reader: passes seq last+1, drops duplicates, reports gaps."""

    def __init__(self, after: int = 0) -> None:
        self.last = after
        self.ended = False

    def accept(self, event: Event) -> str:
        """"next" (deliver it), "duplicate" (drop it) or "gap" (read the log first)."""
        if event.seq <= self.last:
            return "duplicate"
        if event.seq > self.last + 1:
            return "gap"
        self.last = event.seq
        self.ended = event.type in TERMINAL
        return "next"


def _accepted(tracker: SeqTracker, job_id: str, events: Sequence[Event]) -> list[Event]:
    """The log's `events` (seq > tracker.last) the reader may take; `StreamGap` when the log skips the
    next seq. Such a hole is permanent: XADD refuses an id below the log's last, so only a Redis that
    lost the head of the log (restarted without persistence) shows one; waiting would be forever."""
    if events and not tracker.ended and events[0].seq > tracker.last + 1:
        raise StreamGap(job_id, tracker.last + 1, events[0].seq)
    return [event for event in events if not tracker.ended and tracker.accept(event) == "next"]


def _live(tracker: SeqTracker, message: dict | None) -> list[Event] | None:
    """What a pub/sub `message` gives the reader: ``[event]`` to deliver, ``[]`` (a duplicate, or not a
    message), or None: read the log after `tracker.last` (a gap, or no message within the poll)."""
    if message is None:
        return None
    if message["type"] != "message":
        return []
    event = parse_event(message["data"])
    verdict = tracker.accept(event)
    if verdict == "gap":
        return None
    return [event] if verdict == "next" else []


def follow(client: redis_lib.Redis, job_id: str, after: int = 0, *, timeout_s: float | None = None,
           poll_s: float = 1.0) -> Iterator[Event]:
    """Every event of the job with seq > `after`, once each and in order, until done/error; nothing
    when the job had already ended at seq `after` or before.

    Raises `JobNotFound` when the job has no log and no record, `StreamGap` when the log lost the
    next seq (later ones exist), `JobTimeout` after `timeout_s` without a new event. The log is
    re-read every `poll_s` without news, so a dropped pub/sub connection costs latency, never events.
    """
    tracker = SeqTracker(after)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.job_channel(job_id))
    try:
        backlog = read_log(client, job_id, after)
        if not backlog and _check_end(client, job_id):
            return
        yield from _accepted(tracker, job_id, backlog)
        last_news = time.monotonic()
        while not tracker.ended:
            fresh = _live(tracker, pubsub.get_message(timeout=poll_s))
            if fresh is None:
                fresh = _accepted(tracker, job_id, read_log(client, job_id, tracker.last))
            if fresh:
                last_news = time.monotonic()
                yield from fresh
            elif timeout_s is not None and time.monotonic() - last_news > timeout_s:
                raise JobTimeout(f"job {job_id}: no event for {timeout_s:g} s after seq {tracker.last}")
    finally:
        pubsub.close()


async def _aread_log(client, job_id: str, after: int) -> list[Event]:
    entries = await client.xrange(keys.job_events(job_id), min=stream_id(after + 1))
    return [parse_entry(fields) for _id, fields in entries]


async def afollow(client, job_id: str, after: int = 0, *, timeout_s: float | None = None,
                  poll_s: float = 1.0) -> AsyncIterator[Event]:
    """`follow` for a ``redis.asyncio.Redis`` client."""
    tracker = SeqTracker(after)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(keys.job_channel(job_id))
    try:
        backlog = await _aread_log(client, job_id, after)
        if not backlog and await _acheck_end(client, job_id):
            return
        for event in _accepted(tracker, job_id, backlog):
            yield event
        last_news = time.monotonic()
        while not tracker.ended:
            fresh = _live(tracker, await pubsub.get_message(ignore_subscribe_messages=True, timeout=poll_s))
            if fresh is None:
                fresh = _accepted(tracker, job_id, await _aread_log(client, job_id, tracker.last))
            if fresh:
                last_news = time.monotonic()
                for event in fresh:
                    yield event
            elif timeout_s is not None and time.monotonic() - last_news > timeout_s:
                raise JobTimeout(f"job {job_id}: no event for {timeout_s:g} s after seq {tracker.last}")
    finally:
        await pubsub.aclose()
