"""An in-memory `Backend` with a scripted engine, for the gateway's tests and benchmark.

Each job emits ``queued``, ``started``, one ``tokens`` event per token (text `` t<i>``) and ``done``,
keeping a replay log like the real queue's Redis Stream, so resume, cancel and keep-alive paths
behave as they do over Redis, without a model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from .gateway_backend import TERMINAL, JobEvent, WorkerInfo
from .gateway_errors import BrokerUnavailable, NotFound, QueueFull
from .schemas import Job


@dataclass
class _FakeJob:
    job: Job
    log: list[JobEvent] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    cancel: bool = False

    @property
    def finished(self) -> bool:
        return bool(self.log) and self.log[-1].type in TERMINAL


class FakeBackend:
    """Jobs run as asyncio tasks: wait `queue_delay_s`, then one token per `token_delay_s`."""

    def __init__(
        self,
        models: tuple[str, ...] = ("fake-model",),
        *,
        queue_delay_s: float = 0.0,
        token_delay_s: float = 0.0,
        capacity: int = 1_000_000,
        retry_after_s: int = 1,
        broker_up: bool = True,
        fail_with: str | None = None,
    ) -> None:
        self.live = [WorkerInfo(name=f"fake-worker-{i}", model=m) for i, m in enumerate(models)]
        self.queue_delay_s = queue_delay_s
        self.token_delay_s = token_delay_s
        self.capacity = capacity
        self.retry_after_s = retry_after_s
        self.broker_up = broker_up  # False: ping fails, and streams end with BrokerUnavailable
        self.fail_with = fail_with  # an error_type: jobs end with that error after their first token
        self.jobs: dict[str, _FakeJob] = {}
        self._tasks: set[asyncio.Task] = set()

    async def submit(self, job: Job) -> None:
        running = sum(not j.finished for j in self.jobs.values())
        if running >= self.capacity:
            raise QueueFull(
                f"queue for model {job.model!r} is full ({running} jobs)", retry_after_s=self.retry_after_s
            )
        state = _FakeJob(job)
        self.jobs[job.id] = state
        self._emit(
            state, "queued", {"model": job.model, "queue": f"orcd.{job.model}", "priority": job.priority}
        )
        task = asyncio.create_task(self._run(state))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _emit(self, state: _FakeJob, type_: str, data: dict) -> None:
        seq = len(state.log) + 1  # seqs start at 1, as worker.schemas says
        payload = {"v": 1, "type": type_, "job_id": state.job.id, "seq": seq, **data}
        state.log.append(JobEvent(seq, type_, payload))
        state.changed.set()
        state.changed = asyncio.Event()

    async def _run(self, state: _FakeJob) -> None:
        await asyncio.sleep(self.queue_delay_s)
        if state.cancel:
            self._emit(state, "done", self._done(state, "cancelled", 0))
            return
        self._emit(state, "started", {"worker": self.live[0].name, "queue_ms": self.queue_delay_s * 1e3})
        max_tokens = state.job.params.max_tokens
        for i in range(max_tokens):
            if state.cancel:
                self._emit(state, "done", self._done(state, "cancelled", i))
                return
            await asyncio.sleep(self.token_delay_s)
            self._emit(state, "tokens", {"index": i, "ids": [i], "text": f" t{i}"})
            if self.fail_with:
                self._emit(state, "error", {"error_type": self.fail_with, "message": "the fake failed"})
                return
        self._emit(state, "done", self._done(state, "length", max_tokens))

    @staticmethod
    def _done(state: _FakeJob, reason: str, n_tokens: int) -> dict:
        text = state.job.prompt or " ".join(m.content for m in state.job.messages or ())
        prompt_tokens = len(text.split())  # the fake's "tokenizer": one token per word
        return {
            "finish_reason": reason,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n_tokens},
        }

    async def events(self, job_id: str, after: int = 0) -> AsyncIterator[JobEvent]:
        state = self.jobs.get(job_id)
        if state is None:
            raise NotFound(f"job {job_id} not found", param="job_id")
        sent = max(after, 0)  # events 1..sent were seen; log[i] has seq i + 1
        if sent >= len(state.log) and state.finished:
            return
        while True:
            waiter = state.changed
            while sent < len(state.log):
                if not self.broker_up:
                    raise BrokerUnavailable(f"job {job_id}: fake broker down", code="broker_unavailable")
                event = state.log[sent]
                sent += 1
                yield event
                if event.type in TERMINAL:
                    return
            await waiter.wait()

    async def cancel(self, job_id: str) -> str:
        state = self.jobs.get(job_id)
        if state is None:
            raise NotFound(f"job {job_id} not found", param="job_id")
        if state.finished:
            return "finished"
        state.cancel = True
        return "cancelling"

    async def exists(self, job_id: str) -> bool:
        return job_id in self.jobs

    async def workers(self) -> list[WorkerInfo]:
        return list(self.live)

    async def ping(self) -> bool:
        return self.broker_up

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
