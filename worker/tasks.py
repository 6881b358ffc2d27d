"""Celery tasks: deserialise, call the service, report — no logic here (the scheduler has it).

`orcd.generate` carries one job; `orcd.generate_many` a group of jobs sent together by
`Client.submit_many` (worker/enqueue.py), each served as if it had come alone.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject

from .service import WorkerService

GENERATE = "orcd.generate"
GENERATE_MANY = "orcd.generate_many"


def register(app: Celery, service: WorkerService) -> tuple[Task, Task]:
    """Register the generate tasks on `app`, bound to this process's loaded `service`."""

    @app.task(name=GENERATE, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def generate(job: dict[str, Any]) -> dict[str, Any]:
        outcome = service.run_job(job)
        if outcome["status"] == "interrupted":  # the worker is going away mid-job: back to the queue
            raise Reject(f"job {outcome['job_id']}: worker shutting down", requeue=True)
        return outcome

    @app.task(name=GENERATE_MANY, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def generate_many(jobs: list[Any], group: str | None = None, queue: str | None = None) -> dict[str, Any]:
        outcomes = service.run_jobs(jobs, group=(queue, group) if queue and group else None)
        if any(o["status"] == "interrupted" for o in outcomes):  # the whole group back; a redelivery
            raise Reject(f"group {group}: worker shutting down", requeue=True)  # skips the ended jobs
        return {"group": group, "outcomes": outcomes}

    return generate, generate_many
