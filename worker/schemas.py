"""What crosses process boundaries: the Job a client submits and the events a worker publishes.

Both are versioned (``v``) pydantic models. Events share ``job_id``, ``seq`` (1, 2, 3 ... one per
event of a job, so a reader detects gaps and duplicates) and ``ts`` (unix seconds); ``type`` tells
them apart: ``queued`` · ``started`` · ``tokens`` · ``done`` · ``error``. A job ends with exactly one
``done`` or ``error``. Every event also carries the job's ``correlation_id`` (None when it has none).

Versions: jobs are v1. Events are written as v2 (v1 + the optional ``correlation_id``) and read as v1
or v2: a v1 event is a v2 event without a correlation id, so logs written before the change (still
in Redis during a rolling upgrade) stay readable. The number moved because the models forbid extra
fields: a v1 reader refuses a v2 event, and ``v`` says why.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from gpu.params import SamplingParams

from . import keys

SCHEMA_VERSION = 1  # jobs
EVENT_VERSION = 2  # events: 2 added correlation_id
TERMINAL = frozenset({"done", "error"})


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant", "tool"]
    content: str


class Job(BaseModel):
    """One generation request: a prompt (or chat messages) and how to sample its continuation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = SCHEMA_VERSION
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    model: str | None = Field(None, description="model name; the client fills in its own")
    prompt: str | None = None
    chat: bool = Field(False, description="render `prompt` as a user turn with the model's chat template")
    system: str | None = Field(None, description="system turn for `chat`")
    messages: list[ChatMessage] | None = Field(None, min_length=1, description="a whole conversation")
    params: SamplingParams = Field(default_factory=SamplingParams)
    priority: int = Field(5, ge=0, le=9, description="9 = most urgent")
    deadline: float | None = Field(None, gt=0, description="unix seconds; an unfinished job then fails")
    correlation_id: str | None = Field(None, max_length=128)
    created_at: float = Field(default_factory=time.time)

    @field_validator("id")
    @classmethod
    def _id_is_key_safe(cls, value: str) -> str:
        if not keys.valid_job_id(value):
            raise ValueError("job id must be 1-128 characters of [A-Za-z0-9_.-], starting alphanumeric")
        return value

    @model_validator(mode="after")
    def _one_prompt(self) -> Job:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt and messages")
        if self.prompt is not None and not self.prompt:
            raise ValueError("prompt is empty")
        if self.messages is not None and (self.chat or self.system is not None):
            raise ValueError("chat and system go with prompt; put a system turn in messages instead")
        return self


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1, 2] = EVENT_VERSION
    job_id: str
    seq: int = Field(ge=1)
    ts: float = Field(default_factory=time.time)
    correlation_id: str | None = Field(None, max_length=128, description="the job's, for tracing")


class Queued(_Event):
    type: Literal["queued"] = "queued"
    model: str
    queue: str
    priority: int


class Started(_Event):
    type: Literal["started"] = "started"
    worker: str
    queue_ms: float
    attempt: int = Field(1, ge=1, description="> 1 when the job was redelivered after a worker died")


class TokenLogprob(BaseModel):
    """Log-probability of a chosen token and the top alternatives (gpu.sampling.TokenLogprobs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_id: int
    logprob: float
    top: list[tuple[int, float]]


class Tokens(_Event):
    type: Literal["tokens"] = "tokens"
    index: int = Field(ge=0, description="position of ids[0] in the completion")
    ids: list[int]
    text: str
    logprobs: list[TokenLogprob] | None = Field(None, description="one per id when the job asked")


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_tokens: int
    completion_tokens: int


class Timings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    queue_ms: float = Field(description="submitted → admitted into the batch")
    ttft_ms: float = Field(description="submitted → first token produced")
    total_ms: float = Field(description="submitted → finished")
    decode_tok_s: float = Field(description="completion tokens after the first per second")


class Done(_Event):
    type: Literal["done"] = "done"
    finish_reason: Literal["stop", "length", "cancelled"]
    usage: Usage
    timings: Timings | None = None


class Error(_Event):
    type: Literal["error"] = "error"
    error_type: str
    message: str


Event = Annotated[Queued | Started | Tokens | Done | Error, Field(discriminator="type")]
EVENTS: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(data: str | bytes) -> Event:
    """An event from its JSON form (as stored in the stream and published)."""
    return EVENTS.validate_json(data)
