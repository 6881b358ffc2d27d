"""Gateway figures with a fast fake engine: overhead per streamed token, and concurrent SSE streams held.

Usage: python bench/gateway_bench.py [--backend memory|redis] [--jobs N] [--tokens T] [--levels 250,500,...]

The gateway runs as a uvicorn subprocess (one process, as `orcd serve`), the load comes from this
process over raw HTTP/1.1 (asyncio streams, so the client stays cheap). Backends:
- memory: worker.gateway_fake.FakeBackend in the server process (HTTP + SSE cost only);
- redis: the real RedisBackend over Redis (db --redis-db), with a fake engine behind a custom Client
  sender that appends each job's events to its Redis Stream and channel like a worker (one event per
  token, no chunking), so the figure includes pub/sub, replay and event parsing.

1. Overhead per token: `--jobs` jobs of `--tokens` tokens, one at a time and then 8 at once; the
   per-token wall time minus the engine's own per-token time (the fake alone, measured in-process).
2. Streams held: for each level K, K clients open /execute at once on jobs that emit one token a
   second for 10 s; a level holds when every stream gets all its events, none later than 2 s after
   the job's own clock; the server's RSS is read from /proc at the peak.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

MODEL = "smollm2-135m-instruct"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from a checkout


# ---------------------------------------------------------------- server side (subprocess)


def fake_engine_sender(redis_url: str, token_delay_s: float):
    """A Client sender that plays the worker: started, one tokens event per token, done."""
    import redis as redis_lib

    from worker.schemas import Done, Started, Tokens, Usage
    from worker.streams import append_events

    conn = redis_lib.Redis.from_url(redis_url)

    def run(job) -> None:
        ttl = dict(live_ttl_s=600, result_ttl_s=600)
        append_events(conn, [Started(job_id=job.id, seq=2, worker="bench-fake", queue_ms=0.0)], **ttl)
        for i in range(job.params.max_tokens):
            if token_delay_s:
                time.sleep(token_delay_s)
            append_events(conn, [Tokens(job_id=job.id, seq=3 + i, index=i, ids=[i], text=f" t{i}")], **ttl)
        done = Done(
            job_id=job.id,
            seq=3 + job.params.max_tokens,
            finish_reason="length",
            usage=Usage(prompt_tokens=1, completion_tokens=job.params.max_tokens),
        )
        append_events(conn, [done], **ttl)

    def send(job, _queue: str, _priority: int) -> None:
        threading.Thread(target=run, args=(job,), daemon=True).start()

    conn.hset(
        "orcd:worker:bench-fake", mapping={"name": "bench-fake", "model": MODEL, "active": 0, "queued": 0}
    )
    return send


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from worker.gateway import create_app
    from worker.gateway_settings import GatewaySettings

    if args.backend == "memory":
        from worker.gateway_fake import FakeBackend

        backend = FakeBackend((MODEL,), token_delay_s=args.token_delay)
    else:
        from worker.client import Client
        from worker.gateway_redis import RedisBackend

        url = f"redis://127.0.0.1:6379/{args.redis_db}"
        backend = RedisBackend(Client(url, sender=fake_engine_sender(url, args.token_delay)))
    app = create_app(backend, GatewaySettings(keepalive_s=5.0))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="error", backlog=4096)


# ---------------------------------------------------------------- client side


async def stream_job(port: int, max_tokens: int) -> list[tuple[float, str, dict]]:
    """POST /execute over a raw connection; (arrival time, event type, data) for every event."""
    body = json.dumps({"model": MODEL, "prompt": "x", "params": {"max_tokens": max_tokens}}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /execute HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"gateway answered {status!r}")
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    events, buffer = [], b""
    while True:  # chunked transfer encoding, SSE inside
        size = int((await reader.readline()).strip() or b"0", 16)
        if size == 0:
            break
        buffer += (await reader.readexactly(size + 2))[:-2]
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if not line.startswith(b":"))
            if b"event" in fields:
                events.append((time.perf_counter(), fields[b"event"].decode(), json.loads(fields[b"data"])))
    writer.close()
    return events


def engine_alone_us(backend: str, tokens: int, redis_db: int) -> float:
    """Per-token cost of the fake engine itself, without the gateway: the in-memory one iterated
    in-process, or the Redis one's appends (XADD + PUBLISH per event) timed on a scratch job."""
    from worker.gateway_fake import FakeBackend
    from worker.schemas import Job

    if backend == "redis":
        import redis as redis_lib

        from worker.schemas import Tokens
        from worker.streams import append_events

        conn = redis_lib.Redis(db=redis_db)
        t0 = time.perf_counter()
        for i in range(tokens):
            event = Tokens(job_id="bench-scratch", seq=i + 1, index=i, ids=[i], text=f" t{i}")
            append_events(conn, [event], live_ttl_s=60, result_ttl_s=60)
        return (time.perf_counter() - t0) / tokens * 1e6

    async def run() -> float:
        backend = FakeBackend((MODEL,))
        t0 = time.perf_counter()
        job = Job(model=MODEL, prompt="x", params={"max_tokens": tokens})
        await backend.submit(job)
        n = sum([1 async for _ in backend.events(job.id)])
        assert n == tokens + 3
        return (time.perf_counter() - t0) / tokens * 1e6

    return min(asyncio.run(run()) for _ in range(3))


async def overhead(port: int, jobs: int, tokens: int, parallel: int) -> tuple[float, float]:
    """(µs per token of wall time, tokens/s) for `jobs` jobs run `parallel` at a time."""
    sem = asyncio.Semaphore(parallel)

    async def one() -> int:
        async with sem:
            events = await stream_job(port, tokens)
            assert events[-1][1] == "done" and sum(e[1] == "tokens" for e in events) == tokens
            return tokens

    t0 = time.perf_counter()
    total = sum(await asyncio.gather(*(one() for _ in range(jobs))))
    wall = time.perf_counter() - t0
    return wall / total * 1e6 * parallel, total / wall


async def hold(port: int, k: int, tokens: int, token_delay: float) -> tuple[int, float]:
    """(streams that got every event on time, worst lateness in s) for `k` simultaneous streams."""

    async def one() -> float | None:
        try:
            events = await stream_job(port, tokens)
        except (OSError, RuntimeError, asyncio.IncompleteReadError):
            return None
        toks = [t for t, kind, _ in events if kind == "tokens"]
        if len(toks) != tokens or events[-1][1] != "done":
            return None
        return max(t - toks[0] - i * token_delay for i, t in enumerate(toks))

    results = await asyncio.gather(*(one() for _ in range(k)))
    ok = [r for r in results if r is not None]
    return len(ok), max(ok, default=float("nan"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(backend: str, token_delay: float, redis_db: int) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        __file__,
        "--serve",
        "--backend",
        backend,
        "--port",
        str(port),
        "--token-delay",
        str(token_delay),
        "--redis-db",
        str(redis_db),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("gateway did not start")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=("memory", "redis"), default="memory")
    p.add_argument("--jobs", type=int, default=16)
    p.add_argument("--tokens", type=int, default=500)
    p.add_argument("--levels", default="250,500,1000,2000")
    p.add_argument("--redis-db", type=int, default=12)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--token-delay", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args)
        return
    if args.backend == "redis":
        import redis as redis_lib

        redis_lib.Redis(db=args.redis_db).flushdb()

    print(f"gateway bench: backend={args.backend}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    base = engine_alone_us(args.backend, args.tokens, args.redis_db)
    proc, port = start_server(args.backend, 0.0, args.redis_db)
    try:
        for parallel in (1, 8):
            us, tok_s = asyncio.run(overhead(port, args.jobs, args.tokens, parallel))
            print(
                f"  {parallel} stream(s) at once: {us:7.1f} µs/token per stream (fake engine alone "
                f"{base:.1f}), {tok_s:8.0f} tokens/s through the gateway"
            )
    finally:
        proc.terminate()
        proc.wait()

    proc, port = start_server(args.backend, 1.0, args.redis_db)
    try:
        for k in (int(x) for x in args.levels.split(",")):
            peak = [0.0]

            async def watch(k=k, peak=peak):
                task = asyncio.ensure_future(hold(port, k, 10, 1.0))
                while not task.done():
                    peak[0] = max(peak[0], rss_mib(proc.pid))
                    await asyncio.sleep(0.5)
                return task.result()

            t0 = time.perf_counter()
            held, late = asyncio.run(watch())
            print(
                f"  {k:5d} streams at 1 token/s for 10 s: {held} complete, worst lateness {late:.2f} s, "
                f"server RSS peak {peak[0]:.0f} MiB, {time.perf_counter() - t0:.1f} s"
            )
            if held < k or late > 2.0:
                break
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
