"""Test support for the gateway: an in-process uvicorn server on a free port in its own thread, and
the real stack (`orcd worker` + `orcd serve` subprocesses on a Redis database)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

ROOT = Path(__file__).resolve().parents[2]


class ThreadedServer:
    """Serves `app` over real HTTP (streaming, disconnects) on 127.0.0.1:<free port>."""

    def __init__(self, app: FastAPI) -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout_s: float, what: str, procs=()) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        for proc in procs:
            assert proc.poll() is None, f"{what}: {proc.args[3]} exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.1)


def _orcd(*args: str, log: Path) -> subprocess.Popen:
    out = open(log, "wb")
    return subprocess.Popen([sys.executable, "-m", "worker.cli", *args], cwd=ROOT, stdout=out, stderr=out)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def orcd_stack(
    redis_url: str, model: str, logs: Path
) -> Iterator[tuple[str, subprocess.Popen, subprocess.Popen]]:
    """`orcd worker` (numpy, max batch 1, concurrency 1, one token per event) and `orcd serve` (queue
    limit 1, 64 KiB bodies, 0.3 s keep-alives); yields (gateway URL, worker, gateway) once the worker's
    heartbeat shows in /health. Log tails are printed at the end (shown by pytest on failure)."""
    port = free_port()
    worker = _orcd(
        "-v",
        "worker",
        "--redis-url",
        redis_url,
        "--model",
        model,
        "--backend",
        "numpy",
        "--max-batch",
        "1",
        "--concurrency",
        "1",
        "--max-context",
        "512",
        "--heartbeat",
        "1",
        "--chunk-tokens",
        "1",
        log=logs / "worker.log",
    )
    gateway = _orcd(
        "-v",
        "serve",
        "--port",
        str(port),
        "--redis-url",
        redis_url,
        "--keepalive-s",
        "0.3",
        "--max-queue",
        "1",
        "--max-body-bytes",
        "65536",
        log=logs / "serve.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(url), 60, "gateway health", [gateway])
        wait_until(
            lambda: model in httpx.get(f"{url}/health").json()["models"],
            120,
            "worker heartbeat",
            [worker, gateway],
        )
        yield url, worker, gateway
    finally:
        for proc in (gateway, worker):
            proc.terminate()
        for proc in (gateway, worker):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for name in ("worker.log", "serve.log"):
            print(f"--- {name} (tail)\n" + (logs / name).read_text(errors="replace")[-3000:])
