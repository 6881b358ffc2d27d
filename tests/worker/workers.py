"""Real `orcd worker` subprocesses on the numpy backend, for the queue's integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from worker import keys

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("ORCD_QUEUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")  # db 14: the queue's


def unique_queue(tag: str) -> str:
    return f"orcd.test-{tag}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module", autouse=True)
def own_database():
    """db 14 belongs to the queue's integration tests: emptied before and after each module (import it)."""
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield
    client.flushdb()
    client.close()


class WorkerProcess:
    """`python -m worker.cli worker ...` with its output in `log`; ready once its heartbeat is seen."""

    def __init__(self, model: Path, queue: str, log: Path, **flags: object) -> None:
        self.name = f"test-{uuid.uuid4().hex[:8]}"
        self.log = log
        options = {"backend": "numpy", "max_context": 128, "heartbeat": 1.0} | flags
        argv = [sys.executable, "-m", "worker.cli", "-v", "worker", "--model", str(model), "--queue", queue,
                "--redis-url", REDIS_URL, "--name", self.name]
        for flag, value in options.items():
            argv += [f"--{flag.replace('_', '-')}", str(value)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCD_")}
        env["PYTHONPATH"] = str(ROOT)
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 60.0) -> WorkerProcess:
        client = redis.Redis.from_url(REDIS_URL)
        deadline = time.monotonic() + timeout_s
        while not client.exists(keys.worker(self.name)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.name} did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        client.close()
        time.sleep(0.5)  # heartbeat comes with the model loaded; give Celery a moment to start consuming
        return self

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class Relay:
    """The redelivery tests' two workers: a slow first one (40 ms per step) to kill mid-job, then a fresh
    one that gets the unacknowledged message back within seconds (3 s job timeout, 6 s visibility
    timeout, 1 s restore interval) and finishes it."""

    TIMING = dict(job_timeout=3, visibility_timeout=6, restore_interval=1, chunk_tokens=4, chunk_ms=10)

    def __init__(self, model: Path, queue: str, logdir: Path) -> None:
        from worker.client import Client
        from worker.settings import load_settings

        self.model, self.queue, self.logdir = model, queue, logdir
        self.first = WorkerProcess(model, queue, logdir / "first.log", step_delay_ms=40, **self.TIMING)
        self.first.wait_ready()
        self.second: WorkerProcess | None = None
        self.client = Client(settings=load_settings(redis_url=REDIS_URL, model=str(model), queue=queue))

    def start_second(self) -> WorkerProcess:
        self.second = WorkerProcess(self.model, self.queue, self.logdir / "second.log", step_delay_ms=0,
                                    **self.TIMING).wait_ready()
        return self.second

    def stop(self) -> None:
        self.first.stop()
        if self.second is not None:
            self.second.stop()
        self.client.close()


@pytest.fixture
def relay(tiny_model, tmp_path):
    """A `Relay` on a queue of its own (uses the `tiny_model` fixture), stopped after the test."""
    relay = Relay(tiny_model, unique_queue("crash"), tmp_path)
    yield relay
    relay.stop()
