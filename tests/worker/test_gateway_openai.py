"""The OpenAI-compatible routes with the fake backend, driven by the official `openai` package and by
raw HTTP for exact shapes: chunks, usage, error bodies and status codes."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.worker.gateway_server import ThreadedServer
from worker.gateway import create_app
from worker.gateway_fake import FakeBackend
from worker.gateway_settings import GatewaySettings

MODEL = "smollm2-135m-instruct"


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend((MODEL,))


@pytest.fixture
def server(backend):
    with ThreadedServer(create_app(backend, GatewaySettings())) as srv:
        yield srv


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_chat_completion_whole(client, backend):
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi you"}],
        max_tokens=3,
        temperature=0,
        seed=11,
        stop=["\n"],
    )
    assert answer.object == "chat.completion" and answer.model == MODEL
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == " t0 t1 t2"
    assert answer.choices[0].finish_reason == "length"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (
        4,
        3,
        7,
    )
    job = backend.jobs[answer.id.removeprefix("chatcmpl-")].job
    assert [m.model_dump() for m in job.messages] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi you"},
    ]
    assert (job.params.max_tokens, job.params.temperature, job.params.seed, job.params.stop) == (
        3,
        0.0,
        11,
        ["\n"],
    )


def test_chat_completion_stream_with_usage(client):
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=2,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].delta.content for c in chunks[1:3]] == [" t0", " t1"]
    assert chunks[3].choices[0].finish_reason == "length"
    assert chunks[4].choices == [] and chunks[4].usage.completion_tokens == 2
    assert len(chunks) == 5 and len({c.id for c in chunks}) == 1


def test_text_completion_whole_and_stream(client):
    answer = client.completions.create(model=MODEL, prompt="a b c", max_tokens=2)
    assert (answer.object, answer.choices[0].text, answer.usage.prompt_tokens) == (
        "text_completion",
        " t0 t1",
        3,
    )
    chunks = list(client.completions.create(model=MODEL, prompt=["a"], stream=True))
    assert "".join(c.choices[0].text for c in chunks) == "".join(
        f" t{i}" for i in range(16)
    )  # OpenAI's default 16
    assert chunks[-1].choices[0].finish_reason == "length"


def test_models_lists_live_models(client):
    assert [(m.id, m.object) for m in client.models.list()] == [(MODEL, "model")]


def test_errors_use_openai_shape_and_status(client, backend, server):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert info.value.body == {
        "message": info.value.body["message"],
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], top_p=0)
    assert (info.value.body["param"], info.value.body["type"]) == ("top_p", "invalid_request_error")
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.completions.create(model=MODEL, prompt="x", n=2)
    assert info.value.body["param"] == "n"
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model=MODEL, messages=[])
    with pytest.raises(openai.InternalServerError) as info:  # 503: known model, no live worker
        client.completions.create(model="qwen2.5-coder-0.5b-instruct-q4km", prompt="x")
    assert info.value.status_code == 503 and info.value.body["code"] == "no_worker"
    backend.capacity = 0
    with pytest.raises(openai.RateLimitError) as info:
        client.completions.create(model=MODEL, prompt="x")
    assert info.value.response.headers["retry-after"] == "1"  # the fake's


def test_raw_stream_ends_with_done_marker(server):
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_completion_tokens": 1,
        "stream": True,
    }
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
        data = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    assert [json.loads(d)["object"] for d in data[:-1]] == ["chat.completion.chunk"] * 3
    assert json.loads(data[1])["id"] == f"chatcmpl-{r.headers['x-job-id']}"


@pytest.mark.parametrize(("error_type", "status"), [("ContextTooLong", 422), ("GenerationError", 502)])
def test_failed_job_maps_to_422_or_502(client, backend, error_type, status):
    backend.fail_with = error_type
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == status and info.value.body["code"] == error_type
    assert info.value.body["message"].endswith(f": {error_type}: the fake failed")


def test_failed_job_mid_stream_is_an_error_chunk(client, backend):
    backend.fail_with = "GenerationError"
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIError, match="GenerationError: the fake failed"):
        list(stream)
