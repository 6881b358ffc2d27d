"""The chaos run shared by bench/chaos_workers.py and its CI variant: jobs flow while a loop SIGKILLs
a random worker and starts it again; every stream is then checked and every output compared with an
undisturbed single-process run of the same job (`reference_ids`).
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.reliability.cluster import Worker, client_for, tiny_model, unique_queue
from tests.reliability.jobs import Tally, check_stream, random_job
from worker.schemas import Job
from worker.streams import read_log

# a killed job comes back after the visibility timeout; it must exceed the attempt limit (settings.py)
TIMING = dict(job_timeout=10, visibility_timeout=20, restore_interval=1, heartbeat=1.0, chunk_tokens=4,
              chunk_ms=10)


@dataclass
class ChaosResult:
    tally: Tally
    kills: int
    mismatched: list[str] = field(default_factory=list)  # job ids whose tokens differ from the reference
    seconds: float = 0.0


def reference_ids(model: Path, jobs: list[Job], max_context: int) -> dict[str, list[int] | str]:
    """Each job's token ids from `gpu.runner.generate` on one numpy engine (or its error class)."""
    from gpu.engine import load_engine
    from gpu.runner import generate
    from tokenizer import load_tokenizer
    from worker.service import encode_job

    tokenizer = load_tokenizer(model)
    engine = load_engine(model, backend="numpy", max_batch=1, max_context=max_context)
    out: dict[str, list[int] | str] = {}
    for job in jobs:
        prompt_ids = encode_job(job, tokenizer)
        if len(prompt_ids) + job.params.max_tokens > max_context:
            out[job.id] = "ContextTooLong"
            continue
        out[job.id] = [s.token_id for s in generate(engine, tokenizer, prompt_ids, job.params)
                       if s.token_id is not None]
    return out


def run_chaos(workdir: Path, redis_url: str, *, n_jobs: int, n_workers: int, submit_s: float,
              kill_every: tuple[float, float], seed: int = 0, step_delay_ms: float = 15.0,
              max_context: int = 256, timing: dict | None = None, log=print) -> ChaosResult:
    timing = timing or TIMING
    rng = random.Random(seed)
    model = tiny_model(workdir)
    queue = unique_queue("chaos")
    jobs = [random_job(rng, i) for i in range(n_jobs)]
    expected = reference_ids(model, jobs, max_context)
    workers = [Worker(model, queue, redis_url, workdir, i, max_batch=4, concurrency=4,
                      max_context=max_context, step_delay_ms=step_delay_ms, **timing).start()
               for i in range(n_workers)]
    for w in workers:
        w.wait_ready()
    client = client_for(model, queue, redis_url, job_timeout_s=timing["job_timeout"],
                        visibility_timeout_s=timing["visibility_timeout"])
    tally, lock, done = Tally(), threading.Lock(), threading.Event()
    kills = 0

    def chaos() -> None:
        nonlocal kills
        while not done.wait(rng.uniform(*kill_every)):
            live = [w for w in workers if w.alive]
            if len(live) < 2:  # keep one serving, as a fleet with one box down would
                continue
            victim = rng.choice(live)
            victim.kill()
            kills += 1
            log(f"  kill #{kills}: {victim.name} at {time.monotonic() - started:.1f} s; restarting")
            victim.start()

    def follow(job_id: str) -> None:
        check = check_stream(client, job_id, timeout_s=180)
        with lock:
            tally.add(check)

    started = time.monotonic()
    killer = threading.Thread(target=chaos, daemon=True)
    killer.start()
    pool = ThreadPoolExecutor(max_workers=32)
    try:
        for i, job in enumerate(jobs):
            time.sleep(max(0.0, started + i * submit_s / n_jobs - time.monotonic()))
            pool.submit(follow, client.submit(job).id)
        done.set()  # the kills stop with the last submission; the streams then run to their end
        killer.join()
        pool.shutdown(wait=True)
        seconds = time.monotonic() - started
        result = ChaosResult(tally, kills, seconds=seconds)
        for job in jobs:
            events = read_log(client.redis, job.id)
            got: list[int] | str = [i for e in events if e.type == "tokens" for i in e.ids]
            if events and events[-1].type == "error":
                got = events[-1].error_type
            if events and events[-1].type == "done" and events[-1].finish_reason == "cancelled":
                continue
            if got != expected[job.id]:
                result.mismatched.append(job.id)
        return result
    finally:
        done.set()
        pool.shutdown(wait=False, cancel_futures=True)
        for w in workers:
            w.stop()
        client.close()
