"""The whole path: `orcd serve` (uvicorn subprocess) → the real Redis (db 13) → `orcd worker`
(subprocess, SmolLM2 on the numpy backend) → events back as SSE and OpenAI responses.

One worker (max batch 1, concurrency 1, so queue depth is predictable) and one gateway serve the
module; every generation is a few tokens, as the numpy backend is slow.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest
import redis

from tests.worker.gateway_server import orcd_stack, wait_until
from tests.worker.test_gateway import parse_sse
from worker import keys

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/13"  # this module's own database, flushed before and after
MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def db():
    conn = redis.Redis.from_url(REDIS_URL)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


@pytest.fixture(scope="module")
def stack(db, smollm2_path, tmp_path_factory):
    """(gateway URL, worker process, gateway process)."""
    with orcd_stack(REDIS_URL, MODEL, tmp_path_factory.mktemp("gateway-integration")) as running:
        yield running


def execute(url: str, max_tokens: int, **extra) -> tuple[httpx.Response, list[dict]]:
    body = {
        "prompt": "The capital of France is",
        "params": {"max_tokens": max_tokens, "temperature": 0},
        **extra,
    }
    with httpx.stream(
        "POST", f"{url}/execute", json=body, headers={"X-Correlation-ID": "itest-1"}, timeout=60
    ) as r:
        return r, parse_sse(r.iter_lines())


def job_status(db, job_id: str) -> str | None:
    status = db.hget(keys.job_meta(job_id), "status")
    return status.decode() if status else None


def start_stream(url: str, max_tokens: int):
    """Open /execute and read up to the first tokens event; (response context, line iterator, job id)."""
    body = {"prompt": "Once upon a time", "params": {"max_tokens": max_tokens, "ignore_eos": True}}
    ctx = httpx.stream("POST", f"{url}/execute", json=body, timeout=60)
    r = ctx.__enter__()
    lines = r.iter_lines()
    for line in lines:
        if line.startswith("event: tokens"):
            break
    return ctx, lines, r.headers["x-job-id"]


def test_sse_stream_content_and_order_then_resume(stack, db):
    url, _, _ = stack
    r, messages = execute(url, 4)
    assert r.status_code == 200 and r.headers["x-correlation-id"] == "itest-1"
    events = [m for m in messages if "event" in m]
    kinds = [m["event"] for m in events]
    assert kinds[:2] == ["queued", "started"] and kinds[-1] == "done" and set(kinds[2:-1]) == {"tokens"}
    assert [int(m["id"]) for m in events] == list(range(1, len(events) + 1))
    assert [m["data"]["seq"] for m in events] == list(range(1, len(events) + 1))
    tokens = [m["data"] for m in events if m["event"] == "tokens"]
    assert [t["index"] for t in tokens] == list(range(len(tokens)))  # one token per event (chunk 1)
    assert events[-1]["data"]["usage"]["completion_tokens"] == 4 == len(tokens)
    assert events[-1]["data"]["finish_reason"] == "length"
    text = "".join(t["text"] for t in tokens)
    assert text.strip().startswith("Paris")  # greedy SmolLM2 on this prompt
    job_id = r.headers["x-job-id"]
    meta = json.loads(db.hget(keys.job_meta(job_id), "job"))
    assert meta["correlation_id"] == "itest-1" and meta["model"] == MODEL

    with httpx.stream("GET", f"{url}/jobs/{job_id}/events", headers={"Last-Event-ID": "3"}) as resumed:
        replay = [m for m in parse_sse(resumed.iter_lines()) if "event" in m]
    assert replay == events[3:]
    last = events[-1]["id"]
    with httpx.stream("GET", f"{url}/jobs/{job_id}/events", headers={"Last-Event-ID": last}, timeout=10) as r:
        assert (r.status_code, r.read()) == (200, b"")  # seen to the end: an empty stream, not a hang


def test_resume_a_live_stream_with_last_event_id(stack):
    """A second reader joins a running job after seq 3 and sees the same events as the first."""
    url, _, _ = stack
    ctx, lines, job_id = start_stream(url, 6)
    try:
        with httpx.stream("GET", f"{url}/jobs/{job_id}/events", headers={"Last-Event-ID": "3"}) as r:
            resumed = [m for m in parse_sse(r.iter_lines()) if "event" in m]
        original = [m for m in parse_sse(lines) if "event" in m]
    finally:
        ctx.__exit__(None, None, None)
    assert resumed == original  # both: seq 4 .. done
    assert [int(m["id"]) for m in resumed] == list(range(4, 4 + len(resumed)))
    assert resumed[-1]["event"] == "done" and resumed[-1]["data"]["finish_reason"] == "length"
    assert resumed[-1]["data"]["usage"]["completion_tokens"] == 6


def test_disconnect_cancels_the_job(stack, db):
    url, _, _ = stack
    ctx, _, job_id = start_stream(url, 400)
    ctx.__exit__(None, None, None)
    wait_until(lambda: job_status(db, job_id) == "cancelled", 30, "cancel after disconnect")
    done = [
        m
        for m in parse_sse(httpx.get(f"{url}/jobs/{job_id}/events", timeout=30).text.splitlines())
        if m.get("event") == "done"
    ][0]
    assert done["data"]["finish_reason"] == "cancelled"
    assert done["data"]["usage"]["completion_tokens"] < 400


def test_delete_cancels_the_job(stack, db):
    url, _, _ = stack
    ctx, lines, job_id = start_stream(url, 400)
    try:
        answer = httpx.delete(f"{url}/jobs/{job_id}")
        assert (answer.status_code, answer.json()) == (202, {"job_id": job_id, "status": "cancelling"})
        rest = [m for m in parse_sse(lines) if "event" in m]
    finally:
        ctx.__exit__(None, None, None)
    assert rest[-1]["event"] == "done" and rest[-1]["data"]["finish_reason"] == "cancelled"
    assert httpx.delete(f"{url}/jobs/{job_id}").json()["status"] == "finished"


def test_error_statuses(stack):
    url, _, _ = stack
    r = httpx.post(f"{url}/execute", json={"prompt": "x", "params": {"top_p": 0}})
    assert (r.status_code, r.json()["error"]["field"]) == (422, "params.top_p")
    r = httpx.post(f"{url}/execute", json={"model": "no-such-model", "prompt": "x"})
    assert (r.status_code, r.json()["error"]["type"]) == (404, "model_not_found")
    assert httpx.get(f"{url}/jobs/no-such-job/events").status_code == 404
    assert httpx.delete(f"{url}/jobs/no-such-job").status_code == 404
    r = httpx.post(f"{url}/execute", json={"prompt": "x" * 70000})
    assert (r.status_code, r.json()["error"]["type"]) == (413, "payload_too_large")
    with httpx.stream(
        "POST", f"{url}/execute", json={"id": "itest-dup", "prompt": "x", "params": {"max_tokens": 1}}
    ) as r:
        assert r.status_code == 200 and r.headers["x-job-id"] == "itest-dup"
        r.read()
    r = httpx.post(f"{url}/execute", json={"id": "itest-dup", "prompt": "x"})
    assert (r.status_code, r.json()["error"]["type"]) == (409, "conflict")
    r = httpx.post(f"{url}/v1/completions", json={"model": "qwen2.5-coder-0.5b-instruct-q4km", "prompt": "x"})
    assert (r.status_code, r.json()["error"]["code"]) == (503, "no_worker")


def test_full_queue_is_429_with_retry_after(stack, db):
    """The worker runs one job; the gateway's queue limit is 1 waiting job: the next gets 429."""
    url, _, _ = stack
    ctx, lines, running = start_stream(url, 400)  # occupies the worker (kept: a dropped reader disconnects)
    waiting, refused = [], None
    body = {"model": MODEL, "prompt": "x", "max_tokens": 400, "stream": True}
    with httpx.Client(base_url=url, timeout=10) as client:
        try:
            for _ in range(4):  # streams kept open: a closed one would cancel its job
                r = client.send(client.build_request("POST", "/v1/completions", json=body), stream=True)
                if r.status_code == 429:
                    refused = r
                    break
                waiting.append(r)
            assert refused is not None, "no 429 after 4 submissions"
            assert len(waiting) == 1  # exactly one job waits in the queue
            assert refused.headers["retry-after"] == "2"
            assert json.loads(refused.read())["error"]["type"] == "rate_limit_error"
        finally:
            jobs = [running, *(r.headers["x-job-id"] for r in waiting)]
            for job_id in jobs:
                client.delete(f"/jobs/{job_id}")
            for r in waiting:
                r.close()
            ctx.__exit__(None, None, None)
    wait_until(lambda: all(job_status(db, j) == "cancelled" for j in jobs), 60, "queue drained")


def test_openai_package_chat_completion_whole_and_streamed(stack):
    url, _, _ = stack
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    assert [m.id for m in client.models.list()] == [MODEL]
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6, temperature=0)
    assert whole.choices[0].finish_reason in ("stop", "length")
    assert whole.choices[0].message.role == "assistant" and whole.choices[0].message.content
    assert whole.usage.completion_tokens <= 6 and whole.usage.prompt_tokens > 5
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=6, temperature=0, stream=True
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content  # greedy: the same answer both ways
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_metrics_after_traffic(stack):
    url, _, _ = stack
    text = httpx.get(f"{url}/metrics").text
    assert f'orcd_gateway_live_workers{{model="{MODEL}"}} 1.0' in text
    assert 'orcd_gateway_requests_total{method="POST",route="/execute",status="200"}' in text
    assert f'orcd_gateway_ttft_seconds_count{{model="{MODEL}"}}' in text
