"""Shared fixtures: real assets (fetched and cached by the project; missing → failure, not skip),
an isolated Redis database, and the `cuda` marker's skip rule."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from gguf_loader import assets


def _cuda_available() -> tuple[bool, str]:
    if importlib.util.find_spec("pycuda") is None:
        return False, "PyCUDA is not installed (GPU tests run on the device: pytest -m cuda)"
    try:
        import pycuda.driver as drv

        drv.init()
        if drv.Device.count() == 0:
            return False, "no CUDA device"
    except Exception as exc:  # any driver failure means: no usable GPU here
        return False, f"CUDA driver unavailable: {exc}"
    return True, ""


def pytest_collection_modifyitems(config, items):
    if not any("cuda" in item.keywords for item in items):
        return
    ok, reason = _cuda_available()
    if ok:
        return
    skip = pytest.mark.skip(reason=f"cuda: {reason}")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return assets.fetch("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def qwen_path() -> Path:
    return assets.fetch("qwen2.5-coder-0.5b-instruct-q4km")


@pytest.fixture(scope="session")
def vocab_dir() -> Path:
    return assets.fetch_vocab_tests()


@pytest.fixture(scope="session")
def vocab_tokenizer(vocab_dir):
    """`vocab_tokenizer(name)`: the tokenizer of ggml-vocab-<name>.gguf, built once."""
    from tokenizer import Tokenizer, load_tokenizer

    built: dict[str, Tokenizer] = {}

    def get(name: str) -> Tokenizer:
        if name not in built:
            built[name] = load_tokenizer(vocab_dir / f"ggml-vocab-{name}.gguf")
        return built[name]

    return get


REDIS_TEST_URL = os.environ.get("ORCD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_url() -> str:
    """URL of an isolated database on the real Redis, flushed before and after the test."""
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.flushdb()
    yield REDIS_TEST_URL
    client.flushdb()
    client.close()
