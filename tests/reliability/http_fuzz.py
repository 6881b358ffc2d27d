"""HTTP fuzzing of the gateway, shared by bench/fuzz_gateway.py and its CI variant.

`schema_fuzz` draws requests for every operation of the gateway's own OpenAPI schema (schemathesis)
and counts the status codes; a 5xx is a finding unless it is the documented 503 "no live worker"
for a model nobody serves. `HOSTILE_REQUESTS` are hand-written bodies a schema generator won't
produce (lone surrogates, NaN literals, invalid UTF-8, deep nesting, oversized bodies); each must get
a 4xx with a JSON error naming the problem.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

MODEL = "tiny-reliability"


@dataclass
class SchemaFuzz:
    statuses: collections.Counter = field(default_factory=collections.Counter)  # (operation, status) -> n
    server_errors: dict[tuple[str, int], str] = field(default_factory=dict)  # first example of each 5xx

    @property
    def bad(self) -> dict[tuple[str, int], str]:
        return {k: v for k, v in self.server_errors.items() if "no_worker" not in v}


def schema_fuzz(schema, max_examples: int, call: Callable[[Any], Any] | None = None) -> SchemaFuzz:
    """Every operation of `schema` (a schemathesis schema) with `max_examples` generated requests."""
    from hypothesis import HealthCheck, given, settings

    out = SchemaFuzz()
    for result in schema.get_all_operations():
        label = result.ok().label

        @settings(max_examples=max_examples, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        @given(result.ok().as_strategy())
        def run(case) -> None:
            response = call(case) if call else case.call(timeout=30)
            key = (label, response.status_code)  # noqa: B023 (run is called within this iteration)
            out.statuses[key] += 1
            if response.status_code >= 500 and key not in out.server_errors:
                out.server_errors[key] = f"{str(case.body)[:200]} -> {response.text[:300]}"

        run()
    return out


def _execute(body: Any) -> dict[str, Any]:
    return {"method": "POST", "url": "/execute", "content": body if isinstance(body, bytes) else
            json.dumps(body, allow_nan=True).encode(), "headers": {"content-type": "application/json"}}


# name -> request kwargs for httpx (relative url); the bodies are raw bytes, so anything goes
HOSTILE_REQUESTS: dict[str, dict[str, Any]] = {
    "lone surrogate prompt": _execute(b'{"prompt": "a \\ud800 b", "model": "' + MODEL.encode() + b'"}'),
    "lone surrogate in chat": {"method": "POST", "url": "/v1/chat/completions",
                               "json": None, "content": b'{"model": "' + MODEL.encode()
                               + b'", "messages": [{"role": "user", "content": "\\udfff"}]}',
                               "headers": {"content-type": "application/json"}},
    "NaN temperature": _execute(b'{"prompt": "a", "params": {"temperature": NaN}}'),
    "Infinity top_p": _execute(b'{"prompt": "a", "params": {"top_p": Infinity}}'),
    "negative temperature": _execute({"prompt": "a", "params": {"temperature": -1}}),
    "max_tokens 10^12": _execute({"prompt": "a", "params": {"max_tokens": 10**12}}),
    "max_tokens 2^64": _execute({"prompt": "a", "params": {"max_tokens": 2**64}}),
    "seed 2^70": _execute({"prompt": "a", "params": {"seed": 2**70}}),
    "logit_bias 10^9": _execute({"prompt": "a", "params": {"logit_bias": {"1": 1e9}}}),
    "logit_bias 100k entries": _execute({"prompt": "a",
                                         "params": {"logit_bias": {str(i): 1 for i in range(100_000)}}}),
    "stop 1000 strings": _execute({"prompt": "a", "params": {"stop": ["x"] * 1000}}),
    "oversized prompt (context)": _execute({"prompt": "x" * 500_000, "model": MODEL}),
    "2 MB body": _execute({"prompt": "x" * (2 << 20), "model": MODEL}),
    "invalid UTF-8 body": _execute(b'{"prompt": "\xff\xfe"}'),
    "deeply nested JSON": _execute(b'{"prompt": "a", "params": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    "not JSON": _execute(b"prompt=a"),
    "JSON array": _execute(b"[1, 2, 3]"),
    "unknown field": _execute({"prompt": "a", "evil": True}),
    "job id with slash": _execute({"id": "../../etc/passwd", "prompt": "a"}),
    "empty messages": _execute({"messages": []}),
    "bool as max_tokens": _execute({"prompt": "a", "params": {"max_tokens": True}}),
    "openai n=1000": {"method": "POST", "url": "/v1/completions",
                      "json": {"model": MODEL, "prompt": "a", "n": 1000}},
    "openai max_tokens -1": {"method": "POST", "url": "/v1/completions",
                             "json": {"model": MODEL, "prompt": "a", "max_tokens": -1}},
    "openai temperature NaN": {"method": "POST", "url": "/v1/chat/completions",
                               "content": b'{"model": "' + MODEL.encode()
                               + b'", "messages": [{"role": "user", "content": "a"}], "temperature": NaN}',
                               "headers": {"content-type": "application/json"}},
    "resume bad Last-Event-ID": {"method": "GET", "url": "/jobs/x/events",
                                 "headers": {"last-event-id": "-5"}},
    "resume huge job id": {"method": "GET", "url": "/jobs/" + "a" * 10_000 + "/events"},
}


@dataclass(frozen=True)
class HostileResult:
    name: str
    status: int
    detail: str  # the error's code/message, or the end event of a stream

    @property
    def ok(self) -> bool:
        return 400 <= self.status < 500 or (self.status == 200 and self.detail.startswith("error"))


def send_hostile(client: httpx.Client) -> list[HostileResult]:
    out = []
    for name, request in HOSTILE_REQUESTS.items():
        kwargs = {k: v for k, v in request.items() if v is not None and k not in ("method", "url")}
        try:
            with client.stream(request["method"], request["url"], timeout=60, **kwargs) as response:
                body = response.read().decode("utf-8", errors="replace")
        except httpx.HTTPError as exc:
            out.append(HostileResult(name, 0, f"{type(exc).__name__}: {exc}"[:200]))
            continue
        out.append(HostileResult(name, response.status_code, _detail(response.status_code, body)))
    return out


def _detail(status: int, body: str) -> str:
    if status == 200:  # an SSE stream or an OpenAI answer: what did it end with?
        ends = [line[7:] for line in body.splitlines() if line.startswith("event: ")]
        data = [line[6:] for line in body.splitlines() if line.startswith("data: ")]
        error = next((line for line in data if '"error' in line), "")
        return (f"error: {error[:160]}" if error else f"{ends[-1] if ends else body[:120]}")
    try:
        err = json.loads(body).get("error", {})
        return f"{err.get('code') or err.get('type')}: {str(err.get('message'))[:140]}"
    except (ValueError, AttributeError):
        return body[:160]
