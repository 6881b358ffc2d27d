"""CI-sized gateway fuzzing (bench/fuzz_gateway.py): schemathesis requests for every operation of the
gateway's OpenAPI schema never get a 5xx (fake backend, in process), and hand-written hostile bodies
against the real stack (private redis-server on 6393, one `orcd worker`, `orcd serve`) get a 4xx
naming the problem, or a stream that ends with an error event.
"""

from __future__ import annotations

import logging

import httpx
import pytest
import schemathesis

from gguf_loader.assets import DEFAULT_MODEL
from tests.reliability.cluster import Gateway, PrivateRedis, Worker, tiny_model
from tests.reliability.http_fuzz import HOSTILE_REQUESTS, MODEL, schema_fuzz, send_hostile
from worker.gateway import create_app
from worker.gateway_fake import FakeBackend


def test_schema_generated_requests_never_get_a_5xx():
    logging.disable(logging.WARNING)
    try:
        app = create_app(FakeBackend(models=(DEFAULT_MODEL, MODEL)))
        result = schema_fuzz(schemathesis.openapi.from_asgi("/openapi.json", app), max_examples=25)
    finally:
        logging.disable(logging.NOTSET)
    assert result.server_errors == {}
    assert sum(result.statuses.values()) > 100
    assert {op for op, _ in result.statuses} >= {"POST /execute", "POST /v1/chat/completions", "GET /health"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gateway-fuzz")
    server = PrivateRedis(6393, workdir).start()
    worker = Worker(tiny_model(workdir), None, server.url, workdir, 0, max_batch=2, concurrency=4).start()
    gateway = Gateway(server.url, workdir, env={"ORCD_GATEWAY_DEFAULT_MODEL": MODEL})
    try:
        worker.wait_ready()
        gateway.wait_ready()
        with httpx.Client(base_url=gateway.url) as client:
            yield {r.name: r for r in send_hostile(client)}, worker, gateway
    finally:
        gateway.stop()
        worker.stop()
        server.stop()


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(HOSTILE_REQUESTS))
def test_hostile_request_gets_a_clear_client_error(stack, name):
    results, worker, gateway = stack
    result = results[name]
    assert result.ok, result
    assert result.detail and "internal" not in result.detail
    assert worker.alive and gateway.proc.poll() is None
