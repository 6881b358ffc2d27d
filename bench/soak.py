"""Soak figures: N jobs over M minutes on `orcd worker` subprocesses (numpy backend, tiny model).

Usage: python bench/soak.py [--jobs 1000] [--minutes 10] [--workers 2] [--max-batch 4] [--result-ttl 60]

Jobs (tests/reliability/jobs.py: prompts, chat, sampling mixes, stop strings, ~3% too long for the
context, 5% cancelled mid-way) are submitted at an even pace and every stream is read by a client and
checked (seqs 1..n, one end event). Every 5 s: each worker's RSS and the database's key count.
Prints: outcomes; worker RSS after warm-up (the first 20% of the run) vs at the end; key count peak
and the keys left `--result-ttl` + 15 s after the last job, and any key without a TTL; and a KV-slot
check: with the workers idle, max_batch long jobs per worker must all start before any finishes.
Keys are counted for this run's jobs only (another program may share the database). Redis: --redis-url,
default db 8 of ORCD_RELIABILITY_REDIS_URL's server, flushed first.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

import redis  # noqa: E402

from gpu.params import SamplingParams  # noqa: E402
from tests.reliability.cluster import REDIS_URL, Worker, client_for, flush, tiny_model, unique_queue  # noqa: E402
from tests.reliability.jobs import Tally, check_stream, random_job  # noqa: E402
from worker.schemas import Job  # noqa: E402
from worker.streams import read_log  # noqa: E402


def own_keys(r: redis.Redis, job_ids: set[str]) -> list[str]:
    """Keys of this run's jobs (``orcd:job:<id>...`` with <id> in `job_ids`)."""
    names = (k.decode() for k in r.scan_iter(match="orcd:job:*", count=1000))
    return [k for k in names if k.split(":")[2] in job_ids]


class Monitor(threading.Thread):
    """Samples (t, [rss per worker], keys of this run's jobs) every `interval_s`."""

    def __init__(self, workers: list[Worker], redis_url: str, job_ids: set[str],
                 interval_s: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.workers, self.interval_s, self.job_ids = workers, interval_s, job_ids
        self.client = redis.Redis.from_url(redis_url)
        self.samples: list[tuple[float, list[int], int]] = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stop.wait(self.interval_s):
            self.samples.append((time.monotonic() - self.t0, [w.rss() for w in self.workers],
                                 len(own_keys(self.client, set(self.job_ids)))))


def slot_check(client, n_workers: int, max_batch: int) -> str:
    """max_batch long jobs per idle worker: all must start before the first one ends."""
    params = SamplingParams(max_tokens=230, seed=1, ignore_eos=True, temperature=0.0)
    handles = [client.submit(Job(prompt=f"slot check {i}", params=params))
               for i in range(n_workers * max_batch)]
    results = [h.result(timeout_s=120) for h in handles]
    started = [next(e.ts for e in r.events if e.type == "started") for r in results]
    ended = [r.events[-1].ts for r in results]
    ok = max(started) < min(ended)
    return (f"{len(handles)} long jobs on {n_workers} idle workers x max_batch {max_batch}: last start "
            f"{max(started) - min(started):.2f} s after the first, first end at "
            f"{min(ended) - min(started):.2f} s -> {'all slots free' if ok else 'a slot was NOT free'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--result-ttl", type=int, default=60)
    ap.add_argument("--redis-url", default=REDIS_URL.rsplit("/", 1)[0] + "/8", help="db 8 by default")
    args = ap.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="orcd-soak-"))
    model = tiny_model(workdir)
    queue = unique_queue("soak")
    flush(args.redis_url)
    env = {"ORCD_RESULT_TTL_S": str(args.result_ttl)}
    workers = [Worker(model, queue, args.redis_url, workdir, i, env=env, max_batch=args.max_batch,
                      concurrency=args.max_batch).start() for i in range(args.workers)]
    for w in workers:
        w.wait_ready()
    client = client_for(model, queue, args.redis_url, result_ttl_s=args.result_ttl)
    job_ids: set[str] = set()
    monitor = Monitor(workers, args.redis_url, job_ids)
    monitor.start()
    rng = random.Random(1234)
    tally, lock = Tally(), threading.Lock()
    interval = args.minutes * 60.0 / args.jobs
    print(f"soak: {args.jobs} jobs over {args.minutes:g} min on {args.workers} workers "
          f"(max_batch {args.max_batch}), result TTL {args.result_ttl} s; logs in {workdir}", flush=True)

    def follow(job_id: str, cancel_after: float | None) -> None:
        if cancel_after is not None:
            threading.Timer(cancel_after, lambda: client.cancel(job_id)).start()
        check = check_stream(client, job_id, timeout_s=300)
        with lock:
            tally.add(check)

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=32) as pool:
            for i in range(args.jobs):
                due = started + i * interval
                time.sleep(max(0.0, due - time.monotonic()))
                handle = client.submit(random_job(rng, i))
                job_ids.add(handle.id)
                cancel = rng.uniform(0.0, 0.5) if rng.random() < 0.05 else None
                pool.submit(follow, handle.id, cancel)
                if (i + 1) % 100 == 0:
                    print(f"  {i + 1} submitted at {time.monotonic() - started:.0f} s; "
                          f"rss {[round(w.rss() / 2**20, 1) for w in workers]} MiB", flush=True)
        last_end = time.monotonic()
        run_s = last_end - started
        print(f"all {args.jobs} streams ended after {run_s:.0f} s")
        print(tally.summary())
        for c in tally.broken[:10]:
            print(f"  BROKEN {c}")
        print(slot_check(client, args.workers, args.max_batch))
        monitor.stop.set()
        report_rss(monitor.samples, workers, run_s)
        peak = max(monitor.samples, key=lambda s: s[2])
        print(f"this run's job keys: peak {peak[2]} at {peak[0]:.0f} s ({args.jobs / run_s:.2f} jobs/s, "
              f"result TTL {args.result_ttl} s, so about {2 * args.jobs / run_s * args.result_ttl:.0f} "
              "expected alive at once)")
        time.sleep(args.result_ttl + 15)
        report_keys(client, args.redis_url, job_ids)
    finally:
        monitor.stop.set()
        for w in workers:
            w.stop()
        client.close()
    return 1 if tally.broken else 0


def report_rss(samples: list, workers: list[Worker], run_s: float) -> None:
    warm = 0.2 * run_s
    for i, w in enumerate(workers):
        after_warm = [s[1][i] for s in samples if warm <= s[0] <= warm + 30 and s[1][i]]
        end = [s[1][i] for s in samples if s[0] >= run_s - 30 and s[1][i]]
        peak = max(s[1][i] for s in samples)
        if not after_warm or not end:
            print(f"worker {w.name}: not enough RSS samples")
            continue
        a, b = statistics.median(after_warm), statistics.median(end)
        print(f"worker {w.name}: RSS {a / 2**20:.1f} MiB after warm-up ({warm:.0f} s) -> {b / 2**20:.1f} MiB "
              f"at the end ({(b - a) / a * 100:+.2f}%), peak {peak / 2**20:.1f} MiB")


def report_keys(client, redis_url: str, job_ids: set[str]) -> None:
    r = redis.Redis.from_url(redis_url)
    names = [k.decode() for k in r.scan_iter(count=1000)]
    no_ttl = [k for k in names if r.ttl(k) == -1]
    job_keys = own_keys(r, job_ids)
    print(f"after waiting the result TTL + 15 s: {len(job_keys)} keys of this run's jobs left; "
          f"keys without a TTL in the database ({len(no_ttl)}): {no_ttl[:6]}")
    if job_keys:
        left = sorted({k.split(':')[2] for k in job_keys})[:5]
        print(f"  job keys left, e.g. {left}: {[e.type for e in read_log(client.redis, left[0])]}")
    r.close()


if __name__ == "__main__":
    raise SystemExit(main())
