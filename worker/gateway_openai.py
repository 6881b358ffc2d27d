"""OpenAI-compatible routes: /v1/models, /v1/completions, /v1/chat/completions (stream and not).

Requests map onto the same jobs as /execute; a stream is ``data: {chunk}`` messages and a final
``data: [DONE]``, with SSE comments as keep-alives (clients skip them). Errors use OpenAI's shape.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .gateway_backend import JobEvent
from .gateway_errors import GatewayError, InvalidRequest
from .gateway_service import Gateway, make_job
from .gateway_sse import SSE_HEADERS, format_data

# OpenAI request field -> SamplingParams field (extensions as vLLM names them)
_PARAM_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "ignore_eos",
)


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """An OpenAI chat message; content may be a string or a list of text parts (joined)."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart]

    def as_job_message(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(BaseModel):
    """Fields both endpoints share; unknown fields are ignored, as clients send more than we use."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    logit_bias: dict[int, float] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    ignore_eos: bool | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported")
        return n

    def params(self, max_tokens: int | None) -> dict[str, Any]:
        """SamplingParams fields (validated with the Job)."""
        fields = {name: getattr(self, name) for name in _PARAM_FIELDS if getattr(self, name) is not None}
        if max_tokens is not None:
            fields["max_tokens"] = max_tokens
        if self.stop is not None:
            fields["stop"] = [self.stop] if isinstance(self.stop, str) else self.stop
        if self.logit_bias:
            fields["logit_bias"] = self.logit_bias
        return fields


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    echo: Literal[False] = False
    logprobs: None = None
    suffix: None = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt: str | list[str]) -> str | list[str]:
        if isinstance(prompt, list) and len(prompt) != 1:
            raise ValueError("exactly one prompt is supported")
        return prompt


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: Literal[False] | None = None


def _usage(done: dict[str, Any]) -> dict[str, int]:
    usage = done.get("usage") or {}
    prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


CLIENT_FAULTS = frozenset({"InvalidJob", "ContextTooLong"})  # worker.errors classes caused by the input


def _job_error(event: JobEvent) -> GatewayError:
    """A job that ended in `error`: a 422 when its input was at fault (e.g. prompt over the context),
    else 502 (the worker failed, not the gateway); `code` is the worker-side error class."""
    kind = str(event.data.get("error_type", "error"))
    message = f"job {event.data.get('job_id')}: {kind}: {event.data.get('message', '')}"
    if kind in CLIENT_FAULTS:
        return InvalidRequest(message, code=kind)
    error = GatewayError(message, code=kind)
    error.status, error.type = 502, "job_error"
    return error


class _Renderer:
    """Turns one job's events into OpenAI stream chunks (or collects them for a whole response)."""

    def __init__(self, kind: Literal["chat", "text"], job_id: str, model: str, include_usage: bool) -> None:
        self.kind = kind
        self.id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{job_id}"
        self.model = model
        self.created = int(time.time())
        self.include_usage = include_usage
        self.text: list[str] = []

    def _chunk(self, choice: dict[str, Any] | None, usage: dict[str, int] | None = None) -> bytes:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        body: dict[str, Any] = {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "choices": [choice] if choice else [],
        }
        if usage is not None:
            body["usage"] = usage
        return format_data(body)

    def _choice(self, text: str | None, finish: str | None, role: bool = False) -> dict[str, Any]:
        if self.kind == "text":
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if text is not None:
            delta["content"] = text
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    def render(self, event: JobEvent) -> list[bytes]:
        if event.type == "queued" and self.kind == "chat":
            return [self._chunk(self._choice("", None, role=True))]
        if event.type == "tokens" and event.data.get("text"):
            return [self._chunk(self._choice(event.data["text"], None))]
        if event.type == "done":
            out = [
                self._chunk(
                    self._choice(None if self.kind == "chat" else "", event.data.get("finish_reason"))
                )
            ]
            if self.include_usage:
                out.append(self._chunk(None, _usage(event.data)))
            return [*out, format_data("[DONE]")]
        if event.type == "error":
            return self.error(_job_error(event))
        return []

    def error(self, error: GatewayError) -> list[bytes]:
        return [format_data(error.body(True, "-")), format_data("[DONE]")]

    def whole(self, done: JobEvent) -> dict[str, Any]:
        text = "".join(self.text)
        finish = done.data.get("finish_reason")
        if self.kind == "chat":
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return {
            "id": self.id,
            "object": "chat.completion" if self.kind == "chat" else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": _usage(done.data),
        }


def openai_router(gw: Gateway) -> APIRouter:
    router = APIRouter(prefix="/v1")

    async def run(
        request: Request,
        body: _Sampling,
        kind: Literal["chat", "text"],
        prompt: dict[str, Any],
        max_tokens: int | None,
    ) -> Response:
        job = make_job({"model": body.model, **prompt, "params": body.params(max_tokens)}, strip="params.")
        job, submitted = await gw.submit(request, job)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        renderer = _Renderer(kind, job.id, body.model, include_usage)
        events = gw.backend.events(job.id)
        if body.stream:
            stream = gw.stream(
                request, job.id, events, body.model, submitted, renderer.render, renderer.error
            )
            return StreamingResponse(
                stream, media_type="text/event-stream", headers={**SSE_HEADERS, "X-Job-ID": job.id}
            )
        async for event in gw.follow(job.id, events, body.model, submitted):
            if event.type == "tokens":
                renderer.text.append(event.data.get("text", ""))
            elif event.type == "error":
                raise _job_error(event)
            elif event.type == "done":
                return JSONResponse(renderer.whole(event), headers={"X-Job-ID": job.id})
        raise GatewayError(f"job {job.id}: event stream ended without done or error")

    @router.get("/models")
    async def models() -> JSONResponse:
        workers = await gw.backend.workers()
        live: dict[str, int] = {}
        for w in workers:
            live[w.model] = live.get(w.model, 0) + 1
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "worker-orcd", "live_workers": n}
            for m, n in sorted(live.items())
        ]
        return JSONResponse({"object": "list", "data": data})

    @router.post("/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
        return await run(request, body, "text", {"prompt": prompt}, body.max_tokens or 16)

    @router.post("/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        messages = [m.as_job_message() for m in body.messages]
        return await run(
            request, body, "chat", {"messages": messages}, body.max_completion_tokens or body.max_tokens
        )

    return router
