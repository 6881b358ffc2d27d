"""Server-Sent Events for the gateway: wire format, keep-alive comments, cancel on disconnect.

A job's events become SSE messages ``id: <seq>`` / ``event: <type>`` / ``data: <json>``, so a client
that reconnects sends ``Last-Event-ID: <seq>`` and gets only what came after. While nothing arrives
(e.g. the job waits in the queue) a comment line keeps proxies and the client from timing out.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio

from .gateway_backend import TERMINAL, JobEvent
from .gateway_errors import GatewayError

logger = logging.getLogger(__name__)

KEEPALIVE = b": keep-alive\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def format_event(event: JobEvent) -> bytes:
    """One SSE message; the JSON is on one line so no ``data:`` continuation is ever needed."""
    data = json.dumps(event.data, separators=(",", ":"), ensure_ascii=False)
    return f"id: {event.seq}\nevent: {event.type}\ndata: {data}\n\n".encode()


def format_data(payload: Any) -> bytes:
    """An unnamed SSE message (the OpenAI streaming format: ``data: {...}`` and ``data: [DONE]``)."""
    text = (
        payload
        if isinstance(payload, str)
        else json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    )
    return f"data: {text}\n\n".encode()


def format_error(error: GatewayError, correlation_id: str) -> bytes:
    """The gateway's own failure mid-stream (e.g. the broker went away): an ``event: gateway_error``
    without an ``id:``, so a client resuming with Last-Event-ID still gets every job event."""
    data = json.dumps(error.body(False, correlation_id)["error"], separators=(",", ":"), ensure_ascii=False)
    return f"event: gateway_error\ndata: {data}\n\n".encode()


async def get_within(queue: asyncio.Queue, timeout_s: float) -> Any:
    """`queue.get()` or TimeoutError after `timeout_s`; no task per call (unlike asyncio.wait_for)."""
    if not queue.empty():
        return queue.get_nowait()
    async with asyncio.timeout(timeout_s):
        return await queue.get()


async def with_keepalive(events: AsyncIterator[JobEvent], interval_s: float) -> AsyncIterator[list[JobEvent]]:
    """Yield the events in batches of all that are ready (one write each, so a fast producer costs
    fewer HTTP chunks), and an empty batch whenever `interval_s` passes without one (keep-alive).

    The source is pumped by a task into a queue, so a keep-alive timeout never cancels the source's
    pending read (which would close an async generator halfway through).
    """
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=256)

    async def pump() -> None:
        try:
            async for event in events:
                await queue.put(("event", event))
            await queue.put(("end", None))
        except Exception as exc:  # handed to the consumer, re-raised there
            await queue.put(("raise", exc))

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                item = await get_within(queue, interval_s)
            except TimeoutError:
                yield []
                continue
            batch: list[JobEvent] = []
            while item[0] == "event":
                batch.append(item[1])
                if queue.empty():
                    break
                item = queue.get_nowait()
            if batch:
                yield batch
            if item[0] == "raise":
                raise item[1]
            if item[0] == "end":
                return
    finally:
        task.cancel()
        aclose = getattr(events, "aclose", None)
        with anyio.CancelScope(shield=True):
            try:
                await task
            except BaseException:  # the pump's own cancellation
                pass
            if aclose is not None:
                await aclose()


async def job_sse(
    job_id: str,
    events: AsyncIterator[JobEvent],
    *,
    keepalive_s: float,
    render: Callable[[JobEvent], list[bytes]],
    render_error: Callable[[GatewayError], list[bytes]],
    on_event: Callable[[JobEvent], None],
    on_abandon: Callable[[], Awaitable[None]] | None,
    correlation_id: str,
) -> AsyncIterator[bytes]:
    """Body of a streaming response for one job: rendered events, keep-alives, and on a client
    disconnect before the job ended, `on_abandon` (the cancel) run shielded from the cancellation.
    A gateway error while following (broker gone) ends the stream with `render_error`; the job is
    left running for a later resume."""
    finished = False
    try:
        async for batch in with_keepalive(events, keepalive_s):
            if not batch:
                yield KEEPALIVE
                continue
            chunks: list[bytes] = []
            for event in batch:
                on_event(event)
                chunks += render(event)
                finished = event.type in TERMINAL
                if finished:
                    break
            if chunks:
                yield b"".join(chunks)
            if finished:
                return
    except GatewayError as exc:
        finished = True
        logger.warning("job %s cid %s: stream ended by %s: %s", job_id, correlation_id, exc.type, exc.message)
        for chunk in render_error(exc):
            yield chunk
    finally:
        if not finished and on_abandon is not None:
            logger.info("job %s cid %s: client went away before the end, cancelling", job_id, correlation_id)
            with anyio.CancelScope(shield=True):
                try:
                    await on_abandon()
                except Exception:
                    logger.exception("job %s cid %s: cancel after disconnect failed", job_id, correlation_id)
