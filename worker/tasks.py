"""Celery tasks: deserialise, call the service, report — no logic here (the scheduler has it)."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject

from .service import WorkerService

GENERATE = "orcd.generate"


def register(app: Celery, service: WorkerService) -> Task:
    """Register the generate task on `app`, bound to this process's loaded `service`."""

    @app.task(name=GENERATE, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def generate(job: dict[str, Any]) -> dict[str, Any]:
        outcome = service.run_job(job)
        if outcome["status"] == "interrupted":  # the worker is going away mid-job: back to the queue
            raise Reject(f"job {outcome['job_id']}: worker shutting down", requeue=True)
        return outcome

    return generate
