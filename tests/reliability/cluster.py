"""A small fleet for fault injection: `orcd worker` subprocesses (numpy backend, tiny synthetic model)
on a Redis database of our own, a private redis-server when a test must stop it, and a client.

Used by bench/chaos_workers.py, bench/redis_restart.py, bench/soak.py, bench/exhaustion.py and their
CI-sized variants in tests/reliability/. Default database: 11 (``ORCD_RELIABILITY_REDIS_URL``); the
others' are 15 (tests), 14 (queue tests), 13 (gateway tests), 12 (bench/gateway_bench.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis

from worker import keys

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("ORCD_RELIABILITY_REDIS_URL", "redis://127.0.0.1:6379/11")


def tiny_model(directory: Path, *, dim: int = 64, n_layers: int = 2) -> Path:
    """A synthetic llama with the byte-level vocab (the queue tests' model)."""
    from gguf_loader.synthetic import write_synthetic_model

    path = directory / "tiny-reliability.gguf"
    if not path.exists():
        write_synthetic_model(path, "llama", vocab="bytes", dim=dim, n_layers=n_layers, n_heads=4,
                              context_length=512, seed=7)
    return path


def unique_queue(tag: str) -> str:
    return f"orcd.rel-{tag}-{uuid.uuid4().hex[:8]}"


def rss_bytes(pid: int) -> int:
    """Resident set size of a live process (VmRSS), 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Worker:
    """One `orcd worker` subprocess; `start` again after `kill` gives a fresh process, same name."""

    def __init__(self, model: Path, queue: str | None, redis_url: str, log_dir: Path, index: int,
                 env: dict[str, str] | None = None, **flags: object) -> None:
        self.name = f"rel{index}-{uuid.uuid4().hex[:6]}"
        self.model, self.queue, self.redis_url = model, queue, redis_url
        self.log = log_dir / f"{self.name}.log"
        self.flags = {"backend": "numpy", "max_context": 256, "heartbeat": 1.0} | flags
        self.env = env or {}  # ORCD_* settings without a flag (e.g. ORCD_RESULT_TTL_S)
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> Worker:
        argv = [sys.executable, "-m", "worker.cli", "worker", "--model", str(self.model),
                "--redis-url", self.redis_url, "--name", self.name]
        if self.queue:  # else the model's default queue, orcd.<model-name>
            argv += ["--queue", self.queue]
        for flag, value in self.flags.items():
            argv += [f"--{flag.replace('_', '-')}", str(value)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCD_")}
        env["PYTHONPATH"] = str(ROOT)
        env.update(self.env)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1
        return self

    def wait_ready(self, timeout_s: float = 90.0) -> Worker:
        client = redis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + timeout_s
        try:
            while not _heartbeat_pid(client, self.name) == self.proc.pid:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker {self.name} did not start:\n{self.log.read_text()[-3000:]}")
                time.sleep(0.1)
        finally:
            client.close()
        time.sleep(0.5)  # the heartbeat comes with the model loaded; Celery starts consuming just after
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss(self) -> int:
        return rss_bytes(self.proc.pid) if self.alive else 0


def _heartbeat_pid(client: redis.Redis, name: str) -> int | None:
    pid = client.hget(keys.worker(name), "pid")
    return int(pid) if pid else None


class Gateway:
    """`orcd serve` as a subprocess on a free port."""

    def __init__(self, redis_url: str, log_dir: Path, env: dict[str, str] | None = None) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.log = log_dir / "gateway.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCD_")} | (env or {})
        env["PYTHONPATH"] = str(ROOT)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "serve", "--port", str(self.port),
                 "--redis-url", redis_url],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 60.0) -> Gateway:
        import httpx

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                httpx.get(self.url + "/health", timeout=2.0)
                return self
            except httpx.HTTPError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gateway did not start:\n{self.log.read_text()[-3000:]}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class PrivateRedis:
    """A redis-server of our own (no persistence) that a test may stop and start again."""

    def __init__(self, port: int, workdir: Path, *, persist: bool = False) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed")
        self.port, self.workdir, self.persist = port, workdir, persist
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.persist else "no", "--appendfsync", "always",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def client_for(model: Path, queue: str, redis_url: str, **settings):
    from worker.client import Client
    from worker.settings import load_settings

    return Client(settings=load_settings(redis_url=redis_url, model=str(model), queue=queue, **settings))


def flush(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
