"""The HTTP gateway: jobs in over HTTP, their events out as Server-Sent Events; no model held here.

`create_app(backend, settings)` builds the FastAPI app around a `Backend` (the queue over Redis, or
an in-memory fake in tests). Routes: ``POST /execute`` (submit a Job and stream its events),
``GET /jobs/{id}/events`` (resume after ``Last-Event-ID``), ``DELETE /jobs/{id}``, the
OpenAI-compatible ``/v1/*`` (worker.gateway_openai), ``GET /health``, ``GET /metrics`` and the
playground page at ``GET /``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Header, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from .gateway_backend import Backend
from .gateway_errors import NotFound
from .gateway_http import BodyLimitMiddleware, CorrelationMiddleware, correlation_id, install_error_handlers
from .gateway_openai import openai_router
from .gateway_service import Gateway
from .gateway_settings import GatewaySettings
from .gateway_sse import SSE_HEADERS, format_event
from .schemas import Job

logger = logging.getLogger(__name__)

PLAYGROUND = Path(__file__).parent / "static" / "playground.html"


def sse_response(job_id: str, body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        body, media_type="text/event-stream", headers={**SSE_HEADERS, "X-Job-ID": job_id}
    )


def create_app(backend: Backend, settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    gw = Gateway(backend, settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await backend.close()

    app = FastAPI(title="worker-orcd gateway", lifespan=lifespan)
    app.state.gateway = gw
    install_error_handlers(app, gw.metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(CorrelationMiddleware, metrics=gw.metrics)  # outermost: ids on every answer

    @app.post("/execute")
    async def execute(job: Job, request: Request) -> StreamingResponse:
        """Validate and enqueue a job, then stream its events (``id:`` seq, ``event:`` type, JSON data)."""
        job, submitted = await gw.submit(request, job)
        events = backend.events(job.id)
        return sse_response(
            job.id, gw.stream(request, job.id, events, job.model, submitted, lambda e: [format_event(e)])
        )

    @app.get("/jobs/{job_id}/events")
    async def resume(
        job_id: str, request: Request, last_event_id: int = Header(0, ge=0)
    ) -> StreamingResponse:
        """A job's events after seq `Last-Event-ID` (0: all): replayed from its log, then live."""
        if not await backend.exists(job_id):
            raise NotFound(f"job {job_id} not found", param="job_id", code="job_not_found")
        events = backend.events(job_id, after=last_event_id)
        return sse_response(job_id, gw.stream(request, job_id, events, "", None, lambda e: [format_event(e)]))

    @app.delete("/jobs/{job_id}")
    async def cancel(job_id: str, request: Request) -> JSONResponse:
        """Cancel a job: 202 while it stops, 200 when it had already ended, 404 when unknown."""
        status = await backend.cancel(job_id)
        logger.info("job %s cid %s: cancel requested (%s)", job_id, correlation_id(request), status)
        return JSONResponse(
            {"job_id": job_id, "status": status}, status_code=202 if status == "cancelling" else 200
        )

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 when the broker answers (503 if not), with the live workers per model."""
        broker = await backend.ping()
        models: dict[str, int] = {}
        for w in await backend.workers() if broker else []:
            models[w.model] = models.get(w.model, 0) + 1
        body = {
            "status": "ok" if broker else "broker_unavailable",
            "broker": broker,
            "models": {m: {"live_workers": n} for m, n in sorted(models.items())},
        }
        return JSONResponse(body, status_code=200 if broker else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        if await backend.ping():
            gw.metrics.observe_workers(await backend.workers())
        return Response(gw.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(PLAYGROUND, media_type="text/html")

    app.include_router(openai_router(gw))
    return app
