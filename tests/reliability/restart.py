"""Redis restart mid-run, shared by bench/redis_restart.py and its CI variant.

A private redis-server (never the shared one) serves 2 `orcd worker` subprocesses, an `orcd serve`
gateway and a client. Jobs are in flight when the server is stopped; it stays down `down_s` seconds
and starts again, empty (no persistence) or from its append-only file (`persist`). Measured: what a
submit and the gateway's /health answer during the outage, whether the worker and gateway processes
survive and when their heartbeats / health come back, how each in-flight stream ended (bounded by
`stream_timeout_s`: a timeout there is a client that would wait forever without one), how the same
jobs end when followed again after the restart, and whether
fresh jobs submitted after the restart (by the client and over HTTP) all finish.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from gpu.params import SamplingParams
from tests.reliability.cluster import Gateway, PrivateRedis, Worker, client_for, tiny_model
from tests.reliability.jobs import Tally, check_stream
from worker import keys
from worker.schemas import Job
from worker.streams import read_log

TIMING = dict(job_timeout=20, visibility_timeout=40, restore_interval=1, heartbeat=1.0, step_delay_ms=20)


@dataclass
class RestartResult:
    in_flight: Tally  # the streams open when the server stopped
    resumed: Tally  # the same jobs followed again from seq 0 after the restart
    after: Tally
    submit_during_outage: str
    health_during_outage: str
    workers_alive: int
    gateway_alive: bool
    heartbeats_back_s: float | None
    health_back_s: float | None
    http_after: list[str] = field(default_factory=list)
    worker_deaths: list[str] = field(default_factory=list)  # the last fatal log line of each dead worker
    headless: dict[str, int] = field(default_factory=dict)  # job id -> first seq of a log missing its head


def _health(url: str) -> str:
    try:
        return str(httpx.get(url + "/health", timeout=3.0).status_code)
    except httpx.HTTPError as exc:
        return type(exc).__name__


def _http_job(url: str, prompt: str, timeout_s: float) -> str:
    """POST /execute and read the SSE stream to its end event; returns that event's type (or the failure)."""
    body = {"prompt": prompt, "model": "tiny-reliability", "params": {"max_tokens": 8, "seed": 1}}
    try:
        with httpx.stream("POST", url + "/execute", json=body, timeout=timeout_s) as response:
            if response.status_code != 200:
                return f"HTTP {response.status_code}: {response.read()[:200]!r}"
            for line in response.iter_lines():
                if line.startswith("event: ") and line[7:] in ("done", "error", "gateway_error"):
                    return line[7:]
    except httpx.HTTPError as exc:
        return type(exc).__name__
    return "no-end"


def run_restart(workdir: Path, *, port: int = 6390, persist: bool = False, n_jobs: int = 16,
                down_s: float = 3.0, stream_timeout_s: float = 30.0, resume_timeout_s: float = 30.0,
                log=print) -> RestartResult:
    server = PrivateRedis(port, workdir, persist=persist).start()
    model = tiny_model(workdir)
    queue = keys.queue(model)  # the default queue, so jobs over HTTP (model name only) reach it too
    workers = [Worker(model, None, server.url, workdir, i, max_batch=4, concurrency=4, **TIMING).start()
               for i in range(2)]
    gateway = Gateway(server.url, workdir)
    client = None
    try:
        for w in workers:
            w.wait_ready()
        gateway.wait_ready()
        client = client_for(model, queue, server.url, job_timeout_s=TIMING["job_timeout"],
                            visibility_timeout_s=TIMING["visibility_timeout"])
        params = SamplingParams(max_tokens=60, seed=3, ignore_eos=True)
        handles = [client.submit(Job(prompt=f"in flight {i}", params=params)) for i in range(n_jobs)]
        in_flight, lock = Tally(), threading.Lock()

        def follow(job_id: str) -> None:
            check = check_stream(client, job_id, timeout_s=stream_timeout_s)
            with lock:
                in_flight.add(check)

        pool = ThreadPoolExecutor(max_workers=n_jobs)
        for h in handles:
            pool.submit(follow, h.id)
        time.sleep(1.0)  # the first batches are decoding
        server.stop()
        log(f"  redis-server stopped with {n_jobs} jobs in flight; down for {down_s:g} s")
        try:
            client.submit(Job(prompt="during the outage", params=params))
            submit_outage = "accepted"
        except Exception as exc:  # what a caller sees is the figure
            submit_outage = f"{type(exc).__module__}.{type(exc).__name__}"
        health_outage = _health(gateway.url)
        time.sleep(down_s)
        server.start()
        back = time.monotonic()
        log("  redis-server started again")
        beating = lambda: all(_beating(server.url, w.name) for w in workers if w.alive)  # noqa: E731
        heartbeats_back = _wait(beating, 30.0, back)
        health_back = _wait(lambda: _health(gateway.url) == "200", 30.0, back)
        pool.shutdown(wait=True)
        resumed = Tally()
        with ThreadPoolExecutor(max_workers=n_jobs) as again:
            for check in again.map(lambda h: check_stream(client, h.id, timeout_s=resume_timeout_s), handles):
                resumed.add(check)
        headless = {}
        for check in resumed.checks:
            log_seqs = [e.seq for e in read_log(client.redis, check.job_id)]
            if check.outcome == "timeout" and log_seqs and log_seqs[0] > 1:
                headless[check.job_id] = log_seqs[0]
        after, http_after = Tally(), []
        if any(w.alive for w in workers):  # else nothing can serve them: the deaths are the finding
            fresh = [client.submit(Job(prompt=f"after restart {i}",
                                       params=SamplingParams(max_tokens=8, seed=i))) for i in range(8)]
            with ThreadPoolExecutor(max_workers=len(fresh)) as followers:
                for check in followers.map(lambda h: check_stream(client, h.id, timeout_s=stream_timeout_s),
                                           fresh):
                    after.add(check)
            if not after.broken:  # else the workers are not serving: the client's figures say so
                http_after = [_http_job(gateway.url, f"http after restart {i}", stream_timeout_s)
                              for i in range(3)]
        return RestartResult(in_flight, resumed, after, submit_outage, health_outage,
                             sum(w.alive for w in workers), gateway.proc.poll() is None, heartbeats_back,
                             health_back, http_after,
                             [f"exit {w.proc.returncode}: {_fatal_line(w.log)}"
                              for w in workers if not w.alive],
                             headless)
    finally:
        gateway.stop()
        for w in workers:
            w.stop()
        if client is not None:
            client.close()
        server.stop()


KOMBU_RACE = "Unrecoverable error: AttributeError(\"'NoneType' object has no attribute 'hostname'\")"


def _fatal_line(log: Path) -> str:
    """What killed a worker: Celery's "Unrecoverable error" line, else the log's last line."""
    lines = log.read_text(errors="replace").splitlines()
    fatal = [line for line in lines if "Unrecoverable error" in line]
    return (fatal or lines or ["(empty log)"])[-1][-200:]


def _beating(url: str, name: str) -> bool:
    try:
        r = redis.Redis.from_url(url)
        try:
            return bool(r.exists(keys.worker(name)))
        finally:
            r.close()
    except redis.RedisError:
        return False


def _wait(predicate, timeout_s: float, since: float) -> float | None:
    deadline = since + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic() - since
        time.sleep(0.1)
    return None


def describe(result: RestartResult) -> list[str]:
    return [
        f"submit during the outage: {result.submit_during_outage}; gateway /health during it: "
        f"{result.health_during_outage}",
        *(f"    worker died: {line}" for line in result.worker_deaths),
        f"after the restart: {result.workers_alive}/2 worker processes alive, gateway alive: "
        f"{result.gateway_alive}; live workers' heartbeats back after "
        + (f"{result.heartbeats_back_s:.1f} s" if result.heartbeats_back_s is not None else "NEVER (30 s)")
        + ", /health 200 after "
        + (f"{result.health_back_s:.1f} s" if result.health_back_s is not None else "NEVER (30 s)"),
        "in-flight jobs: " + result.in_flight.summary(),
        *(f"    {c.job_id[:8]}: {c.outcome} after {c.seconds:.1f} s, {c.n_events} events {c.detail[:160]}"
          for c in result.in_flight.broken[:6]),
        "the same jobs followed again after the restart: " + result.resumed.summary(),
        *(f"    {c.job_id[:8]}: {c.outcome} after {c.seconds:.1f} s, {c.n_events} events {c.detail[:160]}"
          for c in result.resumed.broken[:6]),
        *([f"    {len(result.headless)} of them wait forever on a log that starts at seq "
           f"{sorted(set(result.headless.values()))} (events published after the restart, head lost)"]
          if result.headless else []),
        "jobs submitted after the restart: " + result.after.summary(),
        *(f"    {c.job_id[:8]}: {c.outcome} {c.detail[:160]}" for c in result.after.broken[:4]),
        f"HTTP /execute after the restart: {json.dumps(result.http_after)}",
    ]
