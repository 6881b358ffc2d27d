"""Gateway figures with a fast fake engine: overhead per streamed token, and concurrent SSE streams held.

Usage: python bench/gateway_bench.py [--backend memory|redis] [--jobs N] [--tokens T] [--levels 250,500,...]

The gateway runs as a uvicorn subprocess (one process, as `orcd serve`), the load comes from this
process over raw HTTP/1.1 (asyncio streams, so the client stays cheap). Backends:
- memory: worker.gateway_fake.FakeBackend in the server process (HTTP + SSE cost only);
- redis: the real RedisBackend over Redis (db --redis-db, flushed), with a fake engine in a process
  of its own: a custom Client sender hands it each job (instead of Celery), and it appends the job's
  events to its Redis Stream and channel like a worker (one event per token, no chunking), so the
  figure includes pub/sub fan-out, event parsing and the gateway's shared subscriber.

1. Overhead per token: `--jobs` jobs of `--tokens` tokens, one at a time and then 8 at once, with
   the engine as fast as it can (the gateway then writes all ready events at once) and paced at
   200 tokens/s per job (one write per event); the figure is the gateway process's CPU time per
   token streamed (/proc; for the memory backend less the fake engine's own cost, measured alone).
2. Streams held: for each level K, K clients open /execute at once on jobs that emit one token a
   second for 10 s; a level holds when every stream gets all its events and 99% of the streams
   see no token more than 1 s late against the job's own clock (the worst is printed too; on a
   shared 2-core machine it is noise-prone); the server's RSS is read from /proc at the peak.
   The load stops at the first level that does not hold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

MODEL = "smollm2-135m-instruct"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from a checkout


# ---------------------------------------------------------------- server side (subprocess)


BENCH_JOBS = "orcd:bench:jobs"  # the fake engine's inbox (the Celery queue's stand-in)


def queue_sender(redis_url: str):
    """A Client sender that hands the job to the fake engine process instead of Celery."""
    import redis as redis_lib

    conn = redis_lib.Redis.from_url(redis_url)
    beat = {"name": "bench-fake", "model": MODEL, "active": 0, "queued": 0}
    conn.hset("orcd:worker:bench-fake", mapping=beat)  # the live worker the gateway looks for

    def send(job, _queue: str, _priority: int) -> None:
        conn.rpush(BENCH_JOBS, job.model_dump_json())

    return send


def fake_engine(redis_url: str, token_delay_s: float) -> None:
    """Plays the worker for every job in the inbox: started, one tokens event per token, done; each
    event XADDed to the job's stream (id 0-<seq>) then PUBLISHed, as worker.streams does."""
    import redis.asyncio as aredis

    from worker import keys
    from worker.schemas import Done, Job, Started, Tokens, Usage

    async def play(conn, job: Job) -> None:
        n = job.params.max_tokens
        events = [Started(job_id=job.id, seq=2, worker="bench-fake", queue_ms=0.0)]
        events += [Tokens(job_id=job.id, seq=3 + i, index=i, ids=[i], text=f" t{i}") for i in range(n)]
        events += [
            Done(
                job_id=job.id,
                seq=3 + n,
                finish_reason="length",
                usage=Usage(prompt_tokens=1, completion_tokens=n),
            )
        ]
        for event in events:
            if event.type == "tokens" and token_delay_s:
                await asyncio.sleep(token_delay_s)
            data = event.model_dump_json()
            pipe = conn.pipeline(transaction=False)
            pipe.xadd(keys.job_events(job.id), {"data": data}, id=f"0-{event.seq}")
            pipe.publish(keys.job_channel(job.id), data)
            await pipe.execute()

    async def main() -> None:
        pool = aredis.BlockingConnectionPool.from_url(redis_url, max_connections=64, timeout=None)
        conn = aredis.Redis(connection_pool=pool)
        tasks = set()
        while True:
            popped = await conn.blpop([BENCH_JOBS], timeout=1)
            if popped is None:
                continue
            task = asyncio.create_task(play(conn, Job.model_validate_json(popped[1])))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    asyncio.run(main())


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
        backend = RedisBackend(Client(url, sender=queue_sender(url)))
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


def engine_alone_us(tokens: int) -> float:
    """CPU cost per token of the in-memory fake engine itself, iterated in-process (no HTTP)."""
    from worker.gateway_fake import FakeBackend
    from worker.schemas import Job

    async def run() -> float:
        backend = FakeBackend((MODEL,))
        t0 = time.process_time()
        job = Job(model=MODEL, prompt="x", params={"max_tokens": tokens})
        await backend.submit(job)
        n = sum([1 async for _ in backend.events(job.id)])
        assert n == tokens + 3
        return (time.process_time() - t0) / tokens * 1e6

    return min(asyncio.run(run()) for _ in range(3))


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def overhead(port: int, pid: int, jobs: int, tokens: int, parallel: int) -> tuple[float, float]:
    """(gateway CPU µs per token, tokens/s) for `jobs` jobs of `tokens` run `parallel` at a time."""
    sem = asyncio.Semaphore(parallel)

    async def one() -> int:
        async with sem:
            events = await stream_job(port, tokens)
            assert events[-1][1] == "done" and sum(e[1] == "tokens" for e in events) == tokens
            return tokens

    t0, cpu0 = time.perf_counter(), cpu_s(pid)
    total = sum(await asyncio.gather(*(one() for _ in range(jobs))))
    wall, cpu = time.perf_counter() - t0, cpu_s(pid) - cpu0
    return cpu / total * 1e6, total / wall


async def hold(port: int, k: int, tokens: int, token_delay: float) -> tuple[int, float, float]:
    """(streams complete, p99 and worst of their lateness in s) for `k` simultaneous streams; a
    stream's lateness is its most-late token against the job's own 1-token-a-second clock."""

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
    ok = sorted(r for r in results if r is not None)
    if not ok:
        return 0, float("nan"), float("nan")
    return len(ok), ok[min(len(ok) - 1, int(0.99 * len(ok)))], ok[-1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def spawn(*flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, *flags], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )


def start(args: argparse.Namespace, token_delay: float) -> tuple[list[subprocess.Popen], int]:
    """The gateway subprocess (and, for the redis backend, the fake engine's); its port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = ["--backend", args.backend, "--token-delay", str(token_delay), "--redis-db", str(args.redis_db)]
    procs = [spawn("--serve", "--port", str(port), *common)]
    if args.backend == "redis":
        procs.append(spawn("--engine", *common))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return procs, port
        except OSError:
            time.sleep(0.1)
    stop(procs)
    raise RuntimeError("gateway did not start")


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
        proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=("memory", "redis"), default="memory")
    p.add_argument("--jobs", type=int, default=16)
    p.add_argument("--tokens", type=int, default=500)
    p.add_argument("--levels", default="1000,2000,4000,8000")
    p.add_argument("--redis-db", type=int, default=12)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--engine", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--token-delay", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args)
        return
    if args.engine:
        fake_engine(f"redis://127.0.0.1:6379/{args.redis_db}", args.token_delay)
        return
    if args.backend == "redis":
        import redis as redis_lib

        redis_lib.Redis(db=args.redis_db).flushdb()

    print(
        f"gateway bench: backend={args.backend}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}",
        flush=True,
    )
    base = engine_alone_us(args.tokens) if args.backend == "memory" else 0.0
    for delay in (0.0, 0.005):
        procs, port = start(args, delay)
        try:
            for parallel in (1, 8):
                us, tok_s = asyncio.run(overhead(port, procs[0].pid, args.jobs, args.tokens, parallel))
                pace = "as fast as it can" if delay == 0 else f"{1 / delay:.0f} tokens/s per job"
                print(
                    f"  engine {pace}, {parallel} stream(s) at once: gateway CPU {us - base:6.1f} µs/token, "
                    f"{tok_s:7.0f} tokens/s through",
                    flush=True,
                )
        finally:
            stop(procs)

    procs, port = start(args, 1.0)
    try:
        for k in (int(x) for x in args.levels.split(",")):
            peak = [0.0]

            async def watch(k=k, peak=peak):
                task = asyncio.ensure_future(hold(port, k, 10, 1.0))
                while not task.done():
                    peak[0] = max(peak[0], rss_mib(procs[0].pid))
                    await asyncio.sleep(0.5)
                return task.result()

            t0 = time.perf_counter()
            held, p99, late = asyncio.run(watch())
            print(
                f"  {k:5d} streams at 1 token/s for 10 s: {held} complete, lateness p99 {p99:.2f} s, "
                f"worst {late:.2f} s, "
                f"server RSS peak {peak[0]:.0f} MiB, {time.perf_counter() - t0:.1f} s",
                flush=True,
            )
            if held < k or p99 > 1.0:
                break
    finally:
        stop(procs)
    if args.backend == "redis":
        import redis as redis_lib

        redis_lib.Redis(db=args.redis_db).flushdb()


if __name__ == "__main__":
    main()
