"""ASGI plumbing of the gateway: correlation ids, the body size limit, request metrics, error shapes.

Both middlewares are plain ASGI (not BaseHTTPMiddleware) so streamed responses and client
disconnects pass through untouched.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .gateway_errors import GatewayError, InvalidRequest, NotFound, PayloadTooLarge, validation_message
from .gateway_metrics import GatewayMetrics

logger = logging.getLogger(__name__)

CORRELATION_HEADER = "x-correlation-id"
_CID_OK = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def correlation_id(request: Request) -> str:
    return request.scope.get("state", {}).get("correlation_id") or "-"


def is_openai(path: str) -> bool:
    return path.startswith("/v1/")


class CorrelationMiddleware:
    """Take X-Correlation-ID from the request (or make one), expose it in scope state, echo it back,
    and count the request by route template and status."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(CORRELATION_HEADER.encode(), b"").decode("latin-1")
        cid = given if _CID_OK.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["correlation_id"] = cid
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (CORRELATION_HEADER.encode(), cid.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            self.metrics.requests.labels(
                scope["method"], getattr(route, "path", "unmatched"), str(status)
            ).inc()


class BodyLimitMiddleware:
    """Answer 413 when the body is larger than `max_bytes`: at once from Content-Length, or while
    reading a chunked body (read whole up to the limit, then replayed to the app)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(scope, send, int(length))
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # disconnected while sending the body
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._reject(scope, send, size)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, send: Send, size: int) -> None:
        error = PayloadTooLarge(
            f"request body of {size}+ bytes is over the limit of {self.max_bytes} bytes",
            param="body",
            code="payload_too_large",
        )
        cid = scope.get("state", {}).get("correlation_id", "-")
        body = json.dumps(error.body(is_openai(scope["path"]), cid)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def error_response(request: Request, error: GatewayError, metrics: GatewayMetrics) -> JSONResponse:
    cid = correlation_id(request)
    metrics.errors.labels(error.type).inc()
    log = logger.error if error.status in (500, 502) else logger.warning  # a bug or a failed job
    log(
        "%s %s cid %s -> %d %s: %s",
        request.method,
        request.url.path,
        cid,
        error.status,
        error.type,
        error.message,
    )
    return JSONResponse(
        error.body(is_openai(request.url.path), cid), status_code=error.status, headers=error.headers
    )


def install_error_handlers(app: FastAPI, metrics: GatewayMetrics) -> None:
    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        return error_response(request, exc, metrics)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors: list[dict[str, Any]] = list(exc.errors())
        message, field = validation_message(errors)
        return error_response(request, InvalidRequest(message, param=field), metrics)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            error: GatewayError = NotFound(f"no route {request.method} {request.url.path}")
        else:
            error = GatewayError(str(exc.detail))
            error.status, error.type = exc.status_code, f"http_{exc.status_code}"
            error.openai_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return error_response(request, error, metrics)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("%s %s cid %s: unhandled", request.method, request.url.path, correlation_id(request))
        return error_response(request, GatewayError(f"internal error: {type(exc).__name__}"), metrics)
