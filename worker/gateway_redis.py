"""The gateway's `Backend` over the queue: worker.client.Client to submit and cancel, a shared
replaying subscriber (worker.gateway_hub) for events, worker heartbeats for liveness.

The client's blocking calls run in worker threads; submits go through one thread, since they end in
Celery's `send_task`, whose producer is not meant to be shared across threads at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import redis as redis_lib
import redis.asyncio as aredis

from . import errors, keys
from .client import Client
from .gateway_backend import JobEvent, WorkerInfo
from .gateway_errors import BrokerUnavailable, Conflict, InvalidRequest, NotFound, QueueFull
from .gateway_hub import EventHub
from .schemas import Job

logger = logging.getLogger(__name__)

WORKERS_CACHE_S = 0.5  # heartbeats are read at most this often (they change every few seconds)


class RedisBackend:
    def __init__(self, client: Client, *, retry_after_s: int = 2) -> None:
        self.client = client
        self.retry_after_s = retry_after_s
        pool = aredis.BlockingConnectionPool.from_url(
            client.settings.redis_url, max_connections=64, timeout=10, socket_connect_timeout=2
        )
        self.aredis = aredis.Redis(connection_pool=pool)  # log reads wait for a connection, never fail
        self.hub = EventHub(self.aredis)
        self._submitter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orcd-gateway-submit")
        self._workers: tuple[float, list[WorkerInfo]] = (0.0, [])

    async def _call(self, fn, *args, executor=None):
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        except (redis_lib.RedisError, errors.BrokerUnavailable) as exc:
            raise BrokerUnavailable(f"broker unavailable: {exc}", code="broker_unavailable") from exc

    async def submit(self, job: Job) -> None:
        try:
            await self._call(self.client.submit, job, executor=self._submitter)
        except errors.QueueFull as exc:
            raise QueueFull(str(exc), retry_after_s=self.retry_after_s) from exc
        except errors.InvalidJob as exc:
            if "already in use" in str(exc):
                raise Conflict(str(exc), param="id", code="job_id_in_use") from exc
            raise InvalidRequest(str(exc)) from exc

    async def events(self, job_id: str, after: int = 0) -> AsyncIterator[JobEvent]:
        try:
            async for event in self.hub.follow(job_id, after):
                yield JobEvent(event.seq, event.type, event.model_dump(mode="json"))
        except errors.JobNotFound as exc:
            raise NotFound(str(exc), param="job_id", code="job_not_found") from exc
        except (redis_lib.RedisError, errors.BrokerUnavailable) as exc:
            raise BrokerUnavailable(f"job {job_id}: broker unavailable while streaming: {exc}") from exc

    async def cancel(self, job_id: str) -> str:
        try:
            running = await self._call(self.client.cancel, job_id)
        except errors.JobNotFound as exc:
            raise NotFound(str(exc), param="job_id", code="job_not_found") from exc
        return "cancelling" if running else "finished"

    async def exists(self, job_id: str) -> bool:
        return bool(await self.aredis.exists(keys.job_meta(job_id)))

    async def workers(self) -> list[WorkerInfo]:
        read_at, cached = self._workers
        if time.monotonic() - read_at < WORKERS_CACHE_S:
            return cached
        beats = await self._call(self.client.workers)
        live = [
            WorkerInfo(
                name=b.get("name", "?"),
                model=b.get("model", "?"),
                active=int(b.get("active", 0)),
                queued=int(b.get("queued", 0)),
                extra=b,
            )
            for b in beats
        ]
        self._workers = (time.monotonic(), live)
        return live

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.aredis.ping(), timeout=2))
        except (redis_lib.RedisError, OSError, TimeoutError) as exc:
            logger.warning("broker ping failed: %s", exc)
            return False

    async def close(self) -> None:
        self._submitter.shutdown(wait=False)
        await self.hub.close()
        await self.aredis.aclose()
        self.client.close()
