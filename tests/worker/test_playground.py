"""The playground page (GET /) in headless Chromium against the real stack (`orcd serve` + `orcd
worker` with SmolLM2 on the numpy backend, Redis db 13): it lists the live model, streams a reply
token by token, and cancels one. Screenshots go to test-output/.

Needs Debian's chromium (/usr/bin/chromium) and the playwright package (its own browsers are not
used); a missing one is a failure, not a skip.
"""

from __future__ import annotations

import pytest
import redis
from playwright.sync_api import sync_playwright

from tests.worker.gateway_server import ROOT, orcd_stack

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/13"
MODEL = "smollm2-135m-instruct"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = ROOT / "test-output"


@pytest.fixture(scope="module")
def gateway_url(smollm2_path, tmp_path_factory):
    conn = redis.Redis.from_url(REDIS_URL)
    conn.flushdb()
    try:
        with orcd_stack(REDIS_URL, MODEL, tmp_path_factory.mktemp("playground")) as (url, _, _):
            yield url
    finally:
        conn.flushdb()
        conn.close()


@pytest.fixture
def page(gateway_url):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{gateway_url}/")
            page.wait_for_function("document.getElementById('model').value !== ''")
            yield page
        finally:
            browser.close()


def state(page, name: str, timeout_s: float = 60) -> None:
    page.wait_for_function(f"document.body.dataset.state === '{name}'", timeout=timeout_s * 1000)


def test_playground_streams_a_reply(page):
    SHOTS.mkdir(exist_ok=True)
    assert page.input_value("#model") == MODEL
    page.fill("#max-tokens", "8")
    page.fill("#temperature", "0")
    page.fill("#prompt", "What is the capital of France?")
    page.click("#send")
    page.wait_for_function("Number(document.getElementById('tokens').textContent) >= 1", timeout=60_000)
    partial = page.text_content("#output")
    state(page, "done")
    page.screenshot(path=SHOTS / "playground-reply.png")
    output = page.text_content("#output")
    assert output.startswith(partial) and output.strip()
    assert page.text_content("#finish") in ("stop", "length")
    assert 1 <= int(page.text_content("#tokens")) <= 8
    assert page.text_content("#ttft").endswith(" ms")
    assert len(page.text_content("#job-id")) == 32


def test_playground_cancels_a_reply(page):
    SHOTS.mkdir(exist_ok=True)
    page.fill("#max-tokens", "400")
    page.fill("#prompt", "Tell me a very long story about a dragon.")
    page.click("#send")
    page.wait_for_function("Number(document.getElementById('tokens').textContent) >= 2", timeout=60_000)
    assert page.is_enabled("#cancel") and not page.is_enabled("#send")
    page.click("#cancel")
    state(page, "done")
    page.screenshot(path=SHOTS / "playground-cancelled.png")
    assert page.text_content("#finish") == "cancelled"
    assert 2 <= int(page.text_content("#tokens")) < 400
    assert page.is_enabled("#send") and not page.is_enabled("#cancel")
