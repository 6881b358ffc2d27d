"""One Redis pub/sub connection for every event stream of a gateway process.

`streams.afollow` holds a pub/sub connection per reader, which caps a gateway at the Redis client
pool (and costs a socket each). The hub subscribes each job's channel once on a shared connection
and fans messages out to per-reader queues; `follow` keeps afollow's contract: subscribe first,
replay the log after the reader's seq, then live events, duplicates dropped, gaps and silences
filled from the log (so a lost pub/sub message costs latency, never an event).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import redis as redis_lib

from . import keys
from .errors import JobNotFound
from .gateway_sse import get_within
from .schemas import TERMINAL, Event, parse_event
from .streams import SeqTracker, stream_id

logger = logging.getLogger(__name__)


class EventHub:
    def __init__(self, aredis, *, poll_s: float = 1.0) -> None:
        self.aredis = aredis
        self.poll_s = poll_s
        self.pubsub = aredis.pubsub(ignore_subscribe_messages=True)
        self.readers: dict[bytes, set[asyncio.Queue[bytes]]] = {}
        self._subscribed = asyncio.Event()
        self._lock = asyncio.Lock()  # one (un)subscribe at a time: concurrent ones would each connect
        self._task: asyncio.Task | None = None

    async def _add(self, job_id: str) -> tuple[bytes, asyncio.Queue[bytes]]:
        channel = keys.job_channel(job_id).encode()
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        first = channel not in self.readers
        self.readers.setdefault(channel, set()).add(queue)
        if first:
            async with self._lock:
                await self.pubsub.subscribe(channel)
            self._subscribed.set()
        if self._task is None:
            self._task = asyncio.create_task(self._dispatch())
        return channel, queue

    async def _remove(self, channel: bytes, queue: asyncio.Queue[bytes]) -> None:
        readers = self.readers.get(channel)
        if readers is None:
            return
        readers.discard(queue)
        if not readers:
            del self.readers[channel]
            try:
                async with self._lock:
                    await self.pubsub.unsubscribe(channel)
            except redis_lib.RedisError as exc:
                logger.warning("unsubscribe %s failed: %s", channel, exc)

    async def _dispatch(self) -> None:
        """Read the shared connection; hand each message to the readers of its channel. On a failure
        it reconnects and resubscribes; readers meanwhile poll the log, so nothing is lost."""
        while True:
            await self._subscribed.wait()
            try:
                message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=self.poll_s)
            except Exception as exc:  # the shared reader must outlive any failure
                logger.warning(
                    "event hub: pub/sub read failed (%s: %s); resubscribing", type(exc).__name__, exc
                )
                await asyncio.sleep(self.poll_s)
                await self._resubscribe()
                continue
            if message is None or message["type"] != "message":
                continue
            for queue in self.readers.get(message["channel"], ()):
                queue.put_nowait(message["data"])

    async def _resubscribe(self) -> None:
        async with self._lock:
            await self._resubscribe_locked()

    async def _resubscribe_locked(self) -> None:
        try:
            await self.pubsub.aclose()
            self.pubsub = self.aredis.pubsub(ignore_subscribe_messages=True)
            if self.readers:
                await self.pubsub.subscribe(*self.readers)
        except (redis_lib.RedisError, OSError) as exc:
            logger.warning("event hub: resubscribe failed: %s", exc)

    async def _read_log(self, job_id: str, after: int) -> list[Event]:
        entries = await self.aredis.xrange(keys.job_events(job_id), min=stream_id(after + 1))
        return [parse_event(fields[b"data"]) for _id, fields in entries]

    async def _ended(self, job_id: str) -> bool:
        last = await self.aredis.xrevrange(keys.job_events(job_id), count=1)
        return bool(last) and parse_event(last[0][1][b"data"]).type in TERMINAL

    async def follow(self, job_id: str, after: int = 0) -> AsyncIterator[Event]:
        """Every event of the job with seq > `after`, once and in order, until done/error."""
        tracker = SeqTracker(after)

        def accepted(events: list[Event]) -> list[Event]:
            return [e for e in events if not tracker.ended and tracker.accept(e) == "next"]

        channel, queue = await self._add(job_id)
        try:
            backlog = await self._read_log(job_id, after)
            if not backlog and after == 0 and not await self.aredis.exists(keys.job_meta(job_id)):
                raise JobNotFound(f"job {job_id} not found (never submitted, or expired)")
            if not backlog and after > 0 and await self._ended(job_id):
                return  # the reader saw the end already: nothing will ever come
            for event in accepted(backlog):
                yield event
            while not tracker.ended:
                try:
                    event = parse_event(await get_within(queue, self.poll_s))
                except TimeoutError:
                    fresh = accepted(await self._read_log(job_id, tracker.last))
                else:
                    verdict = tracker.accept(event)
                    if verdict == "next":
                        fresh = [event]
                    elif verdict == "gap":
                        fresh = accepted(await self._read_log(job_id, tracker.last))
                    else:
                        fresh = []
                for event in fresh:
                    yield event
        finally:
            await self._remove(channel, queue)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.pubsub.aclose()
