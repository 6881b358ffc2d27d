"""The gateway over real HTTP (in-process uvicorn) with the in-memory fake backend: SSE wire format
and order, keep-alives, resume, cancel (DELETE and disconnect), error mapping, health, metrics."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.worker.gateway_server import ThreadedServer
from tests.worker.waiting import wait_until
from worker.gateway import create_app
from worker.gateway_fake import FakeBackend
from worker.gateway_settings import GatewaySettings

MODEL = "smollm2-135m-instruct"


def parse_sse(lines) -> list[dict]:
    """SSE messages as dicts {id, event, data (parsed JSON)} plus {"comment": text} entries, in order."""
    out, msg = [], {}
    for line in lines:
        if line == "":
            if msg:
                out.append(msg)
            msg = {}
        elif line.startswith(":"):
            out.append({"comment": line[1:].strip()})
        else:
            field, _, value = line.partition(": ")
            msg[field] = json.loads(value) if field == "data" else value
    return out


def serve(backend: FakeBackend, **settings):
    return ThreadedServer(create_app(backend, GatewaySettings(**settings)))


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend((MODEL,))


@pytest.fixture
def server(backend):
    with serve(backend, keepalive_s=5.0, max_body_bytes=4096) as srv:
        yield srv


def test_execute_streams_every_event_in_seq_order(server):
    body = {"model": MODEL, "prompt": "one two three", "params": {"max_tokens": 3, "seed": 7}}
    with httpx.stream(
        "POST", f"{server.url}/execute", json=body, headers={"X-Correlation-ID": "cid-42"}
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert r.headers["x-correlation-id"] == "cid-42"
        messages = parse_sse(r.iter_lines())
    job_id = r.headers["x-job-id"]
    assert [m["event"] for m in messages] == ["queued", "started", "tokens", "tokens", "tokens", "done"]
    assert [m["id"] for m in messages] == ["1", "2", "3", "4", "5", "6"]
    assert [m["data"]["seq"] for m in messages] == [1, 2, 3, 4, 5, 6]
    assert {m["data"]["job_id"] for m in messages} == {job_id}
    assert "".join(m["data"]["text"] for m in messages if m["event"] == "tokens") == " t0 t1 t2"
    assert messages[-1]["data"]["finish_reason"] == "length"
    assert messages[-1]["data"]["usage"] == {"prompt_tokens": 3, "completion_tokens": 3}


def test_job_carries_the_correlation_id_and_defaults_the_model(server, backend):
    with httpx.stream(
        "POST",
        f"{server.url}/execute",
        json={"prompt": "x", "params": {"max_tokens": 1}},
        headers={"X-Correlation-ID": "web-req.7"},
    ) as r:
        r.read()
    job = backend.jobs[r.headers["x-job-id"]].job
    assert (job.correlation_id, job.model) == ("web-req.7", MODEL)


def test_bad_correlation_id_is_replaced_by_a_generated_one(server):
    r = httpx.get(f"{server.url}/health", headers={"X-Correlation-ID": "has spaces/and slashes"})
    assert (
        len(r.headers["x-correlation-id"]) == 32 and r.headers["x-correlation-id"] != "has spaces/and slashes"
    )
    assert httpx.get(f"{server.url}/health").headers["x-correlation-id"] != r.headers["x-correlation-id"]


def test_keepalive_comments_while_queued():
    backend = FakeBackend((MODEL,), queue_delay_s=0.45)
    with serve(backend, keepalive_s=0.1) as srv:
        with httpx.stream(
            "POST", f"{srv.url}/execute", json={"prompt": "x", "params": {"max_tokens": 1}}
        ) as r:
            messages = parse_sse(r.iter_lines())
    kinds = [m.get("event", "comment") for m in messages]
    assert kinds[0] == "queued" and kinds[-3:] == ["started", "tokens", "done"]
    waiting = kinds[1 : kinds.index("started")]
    assert len(waiting) >= 3 and set(waiting) == {"comment"}
    assert {m["comment"] for m in messages if "comment" in m} == {"keep-alive"}


def test_resume_replays_after_last_event_id(server):
    with httpx.stream(
        "POST", f"{server.url}/execute", json={"prompt": "x", "params": {"max_tokens": 4}}
    ) as r:
        full = parse_sse(r.iter_lines())
    job_id = r.headers["x-job-id"]
    with httpx.stream("GET", f"{server.url}/jobs/{job_id}/events", headers={"Last-Event-ID": "3"}) as r:
        assert r.status_code == 200
        resumed = parse_sse(r.iter_lines())
    assert resumed == full[3:]
    assert [m["id"] for m in resumed] == ["4", "5", "6", "7"]
    with httpx.stream("GET", f"{server.url}/jobs/{job_id}/events") as r:
        assert parse_sse(r.iter_lines()) == full
    with httpx.stream("GET", f"{server.url}/jobs/{job_id}/events", headers={"Last-Event-ID": "7"}) as r:
        assert (r.status_code, r.read()) == (200, b"")  # seen to the end: an empty stream, not a hang


def test_resume_a_live_job_after_dropping_the_connection():
    backend = FakeBackend((MODEL,), token_delay_s=0.01)
    with serve(backend, cancel_on_disconnect=False) as srv:
        with httpx.stream(
            "POST", f"{srv.url}/execute", json={"prompt": "x", "params": {"max_tokens": 30}}
        ) as r:
            job_id = r.headers["x-job-id"]
            lines = r.iter_lines()
            first = []
            while len(first) < 4:
                first += parse_sse(iter([next(lines) for _ in range(4)]))
        with httpx.stream(
            "GET", f"{srv.url}/jobs/{job_id}/events", headers={"Last-Event-ID": first[-1]["id"]}
        ) as r:
            rest = parse_sse(r.iter_lines())
    seqs = [int(m["id"]) for m in first + rest]
    assert seqs == list(range(1, 34))  # queued, started, 30 tokens, done: nothing lost, nothing twice
    assert rest[-1]["data"]["finish_reason"] == "length"


def test_client_disconnect_cancels_the_job(backend, server):
    backend.token_delay_s = 0.01
    with httpx.stream(
        "POST", f"{server.url}/execute", json={"prompt": "x", "params": {"max_tokens": 5000}}
    ) as r:
        job_id = r.headers["x-job-id"]
        for line in r.iter_lines():
            if line.startswith("event: tokens"):
                break
    wait_until(lambda: backend.jobs[job_id].finished, what="the job to finish")
    last = backend.jobs[job_id].log[-1]
    assert (last.type, last.data["finish_reason"]) == ("done", "cancelled")
    assert last.data["usage"]["completion_tokens"] < 5000


def test_delete_cancels_a_running_job(backend, server):
    backend.token_delay_s = 0.01
    with httpx.stream(
        "POST", f"{server.url}/execute", json={"prompt": "x", "params": {"max_tokens": 5000}}
    ) as r:
        job_id = r.headers["x-job-id"]
        lines = r.iter_lines()
        while not next(lines).startswith("event: tokens"):
            pass
        answer = httpx.delete(f"{server.url}/jobs/{job_id}")
        assert (answer.status_code, answer.json()) == (202, {"job_id": job_id, "status": "cancelling"})
        rest = parse_sse(lines)
    assert rest[-1]["event"] == "done" and rest[-1]["data"]["finish_reason"] == "cancelled"
    again = httpx.delete(f"{server.url}/jobs/{job_id}")
    assert (again.status_code, again.json()["status"]) == (200, "finished")


def error_of(r: httpx.Response) -> dict:
    return r.json()["error"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "x", "params": {"temperature": -1}}, "params.temperature"),
        ({"prompt": "x", "params": {"max_tokens": "many"}}, "params.max_tokens"),
        ({"prompt": "x", "params": {"top_q": 0.5}}, "params.top_q"),
        ({"prompt": "x", "messages": [{"role": "user", "content": "y"}]}, None),
        ({"messages": [{"role": "robot", "content": "y"}]}, "messages.0.role"),
        ({"prompt": "x", "priority": 12}, "priority"),
        ({"prompt": 5}, "prompt"),
    ],
)
def test_invalid_job_is_422_naming_the_field(server, body, field):
    r = httpx.post(f"{server.url}/execute", json=body)
    assert r.status_code == 422
    assert error_of(r)["type"] == "validation_error"
    assert error_of(r)["field"] == field
    assert error_of(r)["correlation_id"] == r.headers["x-correlation-id"]


def test_malformed_json_is_422(server):
    r = httpx.post(
        f"{server.url}/execute", content=b'{"prompt": ', headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422 and error_of(r)["type"] == "validation_error"


def test_unknown_model_is_404_and_known_model_without_worker_is_503(server):
    r = httpx.post(f"{server.url}/execute", json={"model": "gpt-9", "prompt": "x"})
    assert (r.status_code, error_of(r)["type"], error_of(r)["field"]) == (404, "model_not_found", "model")
    r = httpx.post(f"{server.url}/execute", json={"model": "qwen2.5-coder-0.5b-instruct-q4km", "prompt": "x"})
    assert (r.status_code, error_of(r)["type"]) == (503, "no_worker")


def test_unknown_job_and_route_are_404(server):
    assert httpx.get(f"{server.url}/jobs/nope/events").status_code == 404
    r = httpx.delete(f"{server.url}/jobs/nope")
    assert (r.status_code, error_of(r)["type"]) == (404, "not_found")
    r = httpx.get(f"{server.url}/no/such/route")
    assert (r.status_code, error_of(r)["type"]) == (404, "not_found")


def test_body_over_the_limit_is_413(server):
    big = {"prompt": "x" * 5000}
    r = httpx.post(f"{server.url}/execute", json=big)
    assert (r.status_code, error_of(r)["type"]) == (413, "payload_too_large")
    chunks = (json.dumps(big)[i : i + 1000].encode() for i in range(0, 5020, 1000))
    r = httpx.post(f"{server.url}/execute", content=chunks, headers={"Content-Type": "application/json"})
    assert r.status_code == 413  # chunked: no Content-Length, counted while read
    r = httpx.post(f"{server.url}/v1/completions", json={"model": MODEL, "prompt": "x" * 5000})
    assert (r.status_code, error_of(r)["type"]) == (413, "invalid_request_error")


def test_full_queue_is_429_with_retry_after(backend, server):
    backend.capacity, backend.retry_after_s = 0, 3
    r = httpx.post(f"{server.url}/execute", json={"prompt": "x"})
    assert (r.status_code, r.headers["retry-after"], error_of(r)["type"]) == (429, "3", "queue_full")
    r = httpx.post(f"{server.url}/v1/completions", json={"model": MODEL, "prompt": "x"})
    assert (r.status_code, r.headers["retry-after"]) == (429, "3")
    assert error_of(r) == {
        "message": r.json()["error"]["message"],
        "type": "rate_limit_error",
        "param": None,
        "code": "queue_full",
    }


def test_health_reports_broker_and_live_workers(backend, server):
    r = httpx.get(f"{server.url}/health")
    assert (r.status_code, r.json()) == (
        200,
        {"status": "ok", "broker": True, "models": {MODEL: {"live_workers": 1}}},
    )
    backend.broker_up = False
    r = httpx.get(f"{server.url}/health")
    assert (r.status_code, r.json()["status"]) == (503, "broker_unavailable")


def test_metrics_count_requests_tokens_and_latencies(server):
    with httpx.stream(
        "POST", f"{server.url}/execute", json={"prompt": "x", "params": {"max_tokens": 5}}
    ) as r:
        r.read()
    httpx.post(f"{server.url}/execute", json={"prompt": "x", "params": {"temperature": -1}})
    text = httpx.get(f"{server.url}/metrics").text
    assert f'orcd_gateway_tokens_generated_total{{model="{MODEL}"}} 5.0' in text
    assert f'orcd_gateway_ttft_seconds_count{{model="{MODEL}"}} 1.0' in text
    assert f'orcd_gateway_job_duration_seconds_count{{model="{MODEL}"}} 1.0' in text
    assert 'orcd_gateway_requests_total{method="POST",route="/execute",status="200"} 1.0' in text
    assert 'orcd_gateway_requests_total{method="POST",route="/execute",status="422"} 1.0' in text
    assert 'orcd_gateway_errors_total{type="validation_error"} 1.0' in text
    assert f'orcd_gateway_live_workers{{model="{MODEL}"}} 1.0' in text
    assert "orcd_gateway_active_streams 0.0" in text


def test_broker_lost_mid_stream_ends_with_a_gateway_error_event(backend, server):
    backend.token_delay_s = 0.01
    with httpx.stream(
        "POST", f"{server.url}/execute", json={"prompt": "x", "params": {"max_tokens": 500}}
    ) as r:
        lines = r.iter_lines()
        while not next(lines).startswith("event: tokens"):
            pass
        backend.broker_up = False
        rest = parse_sse(lines)
    assert rest[-1]["event"] == "gateway_error" and "id" not in rest[-1]
    assert rest[-1]["data"]["type"] == "broker_unavailable"
    assert rest[-1]["data"]["correlation_id"] == r.headers["x-correlation-id"]
    job = backend.jobs[r.headers["x-job-id"]]
    assert not job.cancel  # left running: the client may resume once the broker is back


def test_job_error_event_is_streamed_as_is(backend, server):
    backend.fail_with = "GenerationError"
    with httpx.stream("POST", f"{server.url}/execute", json={"prompt": "x"}) as r:
        messages = parse_sse(r.iter_lines())
    assert [m["event"] for m in messages] == ["queued", "started", "tokens", "error"]
    assert messages[-1]["data"]["error_type"] == "GenerationError"


def test_lone_surrogate_is_422_naming_the_field(server):
    body = b'{"messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": "bad \\ud800"}]}'
    r = httpx.post(f"{server.url}/execute", content=body, headers={"Content-Type": "application/json"})
    assert (r.status_code, error_of(r)["field"]) == (422, "messages.1.content")
    r = httpx.post(
        f"{server.url}/v1/completions",
        content=b'{"model": "%s", "prompt": "\\udfff"}' % MODEL.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert (r.status_code, error_of(r)["param"]) == (422, "prompt")
