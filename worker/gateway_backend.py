"""What the gateway needs from the queue, as one small protocol.

The HTTP layer (worker/gateway.py) talks only to a `Backend`; `worker.gateway_redis.RedisBackend`
implements it over the queue's client library, and `worker.gateway_fake.FakeBackend` in memory for
tests and the benchmark. Events are passed on as plain (seq, type, data) records.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from .schemas import Job

TERMINAL = frozenset({"done", "error"})  # as worker.schemas.TERMINAL


@dataclass(frozen=True)
class JobEvent:
    """One event of a job as published by the worker; `data` is its JSON form (including seq, type)."""

    seq: int
    type: str
    data: dict[str, Any]


@dataclass(frozen=True)
class WorkerInfo:
    """A live worker, from its heartbeat."""

    name: str
    model: str
    active: int = 0
    queued: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    async def submit(self, job: Job) -> None:
        """Enqueue; raises gateway_errors.QueueFull (429) or NoWorker (503)."""

    def events(self, job_id: str, after: int = 0) -> AsyncIterator[JobEvent]:
        """Events with seq > `after`: replayed from the job's log, then live, ending at done/error."""

    async def cancel(self, job_id: str) -> str:
        """Ask for the job to stop: "cancelling", or "finished" if it already ended; NotFound if unknown."""

    async def exists(self, job_id: str) -> bool: ...

    async def workers(self) -> list[WorkerInfo]:
        """Workers whose heartbeat is current."""

    async def ping(self) -> bool:
        """True when the broker answers."""

    async def close(self) -> None: ...
