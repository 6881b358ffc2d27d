"""What the gateway's routes share (backend, settings, metrics) and do (check the model, submit, stream)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from pydantic import ValidationError

from gguf_loader.assets import MODELS

from .gateway_backend import Backend, JobEvent, WorkerInfo
from .gateway_errors import GatewayError, InvalidRequest, NoWorker, UnknownModel, validation_message
from .gateway_http import correlation_id
from .gateway_metrics import GatewayMetrics, JobTimer
from .gateway_settings import GatewaySettings
from .gateway_sse import format_error, job_sse
from .schemas import Job

logger = logging.getLogger(__name__)


def _unencodable(value: Any, path: str = "") -> str | None:
    """Dotted path of the first string in `value` that is not valid UTF-8 (a lone surrogate, which a
    JSON ``\\ud800`` escape can carry and the queue could not store), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body"
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _unencodable(item, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def make_job(fields: dict[str, Any], strip: str = "") -> Job:
    """A Job from fields built by the gateway; a bad one is a 422 naming the field (less `strip`)."""
    try:
        return Job.model_validate(fields)
    except ValidationError as exc:
        message, field = validation_message(exc.errors())
        if field and strip and field.startswith(strip):
            field, message = field.removeprefix(strip), message.removeprefix(strip)
        raise InvalidRequest(message, param=field) from exc


class Gateway:
    """What the routes share: the backend, settings and metrics; submitting and following jobs."""

    def __init__(self, backend: Backend, settings: GatewaySettings) -> None:
        self.backend = backend
        self.settings = settings
        self.metrics = GatewayMetrics()

    async def live_workers(self, model: str) -> list[WorkerInfo]:
        """Workers serving `model`; 404 for a model nobody knows, 503 for a known one without a worker."""
        workers = await self.backend.workers()
        serving = [w for w in workers if w.model == model]
        if serving:
            return serving
        if model in MODELS:
            raise NoWorker(f"no live worker for model {model!r}", param="model", code="no_worker")
        known = sorted({*MODELS, *(w.model for w in workers)})
        raise UnknownModel(
            f"model {model!r} not found (known: {', '.join(known)})", param="model", code="model_not_found"
        )

    async def submit(self, request: Request, job: Job) -> tuple[Job, float]:
        """Fill in the model and correlation id, check a worker is live, enqueue; the job and its time."""
        cid = job.correlation_id or correlation_id(request)
        job = job.model_copy(
            update={"model": job.model or self.settings.default_model, "correlation_id": cid}
        )
        field = _unencodable(job.model_dump())
        if field is not None:
            raise InvalidRequest(f"{field}: not valid UTF-8 (a lone surrogate)", param=field)
        await self.live_workers(job.model)
        await self.backend.submit(job)
        logger.info("job %s cid %s: submitted for model %s", job.id, cid, job.model)
        return job, time.perf_counter()

    def stream(
        self,
        request: Request,
        job_id: str,
        events: AsyncIterator[JobEvent],
        model: str,
        submitted: float | None,
        render: Callable[[JobEvent], list[bytes]],
        render_error: Callable[[GatewayError], list[bytes]] | None = None,
    ) -> AsyncIterator[bytes]:
        """The streaming body for one job (SSE `render`ed events, keep-alives, cancel on disconnect);
        a gateway failure mid-stream ends it with `render_error` (default: ``event: gateway_error``).
        `submitted` None: a resumed stream, not observed (its tokens counted when first streamed)."""
        cid = correlation_id(request)

        def on_error(error: GatewayError) -> list[bytes]:
            self.metrics.errors.labels(error.type).inc()
            return render_error(error) if render_error else [format_error(error, cid)]

        timer = JobTimer(self.metrics, model, submitted) if submitted is not None else (lambda _event: None)
        abandon = (lambda: self.backend.cancel(job_id)) if self.settings.cancel_on_disconnect else None

        async def body() -> AsyncIterator[bytes]:
            self.metrics.active_streams.inc()
            try:
                async for chunk in job_sse(
                    job_id,
                    events,
                    keepalive_s=self.settings.keepalive_s,
                    render=render,
                    render_error=on_error,
                    on_event=timer,
                    on_abandon=abandon,
                    correlation_id=cid,
                ):
                    yield chunk
            finally:
                self.metrics.active_streams.dec()

        return body()

    async def follow(
        self, job_id: str, events: AsyncIterator[JobEvent], model: str, submitted: float
    ) -> AsyncIterator[JobEvent]:
        """The events of a job answered as a whole (no stream): observed for metrics, no keep-alives."""
        timer = JobTimer(self.metrics, model, submitted)
        async for event in events:
            timer(event)
            yield event
