"""How fast a burst of jobs reaches one worker: the dev-machine reproduction of the queue's arrival spread.

    python bench/burst_arrival.py --redis-url redis://127.0.0.1:6379/13 --bursts 5
    python bench/burst_arrival.py --submit many            # Client.submit_many: one message per group
    python bench/burst_arrival.py --submit threads         # one thread per job calling Client.submit

One `orcd worker` subprocess (numpy backend, a tiny synthetic llama unless --model), then --bursts
bursts of --jobs short jobs submitted at once. Per burst (one line each, then medians):
- `submit_ms`: the client's submit loop (or its one submit_many call), first call to last return;
- `received_span_ms`: first to last Celery `received` line of the burst's messages in the worker's log
  (one per job with --submit one or threads, one per group with many);
- `handed_span_ms`: first to last job handed to the engine (the service's `attempt N` line per job),
  the figure both ways share; `handed_after_ms`: the last hand-off after the first submit call.
Each burst's jobs are followed to their end before the next burst.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker import keys  # noqa: E402

STAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) "
RECEIVED = re.compile(STAMP + r".*\[([\w.-]+)\] received")
RECEIVED_ANY = re.compile(r"\[([\w.-]+)\] received")
HANDED = re.compile(STAMP + r".*job ([\w.-]+) cid \S+: attempt \d+,")


def stamps(lines: list[str], pattern: re.Pattern, ids: set[str]) -> list[float]:
    """Epoch seconds of the log lines matching `pattern` whose third group is one of `ids`."""
    out = []
    for line in lines:
        found = pattern.match(line)
        if found and found.group(3) in ids:
            out.append(time.mktime(time.strptime(found.group(1), "%Y-%m-%d %H:%M:%S"))
                       + int(found.group(2)) / 1000.0)
    return out


def span_ms(times: list[float]) -> float:
    return (max(times) - min(times)) * 1000.0 if times else float("nan")


def tiny_model(workdir: Path) -> Path:
    from gguf_loader.synthetic import write_synthetic_model

    return write_synthetic_model(workdir / "tiny-burst.gguf", "llama", vocab="bytes", dim=64, n_layers=2,
                                 n_heads=4, context_length=512, seed=7)


def start_worker(model: Path, redis_url: str, queue: str, log: Path, args: argparse.Namespace):
    name = f"burst-{uuid.uuid4().hex[:6]}"
    argv = [sys.executable, "-m", "worker.cli", "-v", "worker", "--model", str(model), "--backend",
            args.backend, "--redis-url", redis_url, "--queue", queue, "--name", name, "--max-batch",
            str(args.jobs), "--concurrency", str(args.jobs), "--max-context", "256", "--heartbeat", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCD_") or k == "ORCD_CUBIN_DIR"}
    env["PYTHONPATH"] = str(ROOT)
    out = open(log, "wb")  # noqa: SIM115 (closed with the process)
    return name, subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT), out


def burst(client, jobs, how: str) -> float:
    """Submit `jobs` at once (`how`: bench/submit_modes.py), wait for every end; the submit time in ms."""
    from submit_modes import submit_all

    start = time.perf_counter()
    handles = submit_all(client, jobs, how)
    submit_ms = (time.perf_counter() - start) * 1000.0
    threads = [threading.Thread(target=h.result, kwargs={"timeout_s": 120}) for h in handles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return submit_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--model", type=Path, default=None, help="GGUF path (default: a tiny synthetic one)")
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--bursts", type=int, default=5)
    parser.add_argument("--submit", choices=("one", "threads", "many"), default="one")
    args = parser.parse_args()

    from gpu.params import SamplingParams
    from worker.client import Client
    from worker.schemas import Job
    from worker.settings import load_settings

    workdir = Path(tempfile.mkdtemp(prefix="orcd-burst-"))
    model = args.model or tiny_model(workdir)
    queue = f"orcd.burst-{uuid.uuid4().hex[:6]}"
    log = workdir / "worker.log"
    settings = load_settings(redis_url=args.redis_url, model=str(model), queue=queue, max_queue=100000,
                             max_batch=args.jobs)
    client = Client(settings=settings)
    name, proc, out = start_worker(model, args.redis_url, queue, log, args)
    rows = []
    with contextlib.ExitStack() as stack:
        stack.callback(out.close)
        stack.callback(proc.wait, 30)
        stack.callback(proc.terminate)
        stack.callback(client.close)
        while not client.redis.exists(keys.worker(name)):
            if proc.poll() is not None:
                raise SystemExit(f"worker did not start; see {log}")
            time.sleep(0.1)
        params = SamplingParams(max_tokens=args.max_tokens, temperature=0.8, ignore_eos=True)
        burst(client, [Job(prompt="warm up", params=params) for _ in range(4)], args.submit)
        time.sleep(1.0)  # the log's seconds are whole milliseconds: keep the warm-up apart
        for b in range(args.bursts):
            jobs = [Job(prompt=f"burst {b} job {k}: tell me a story", params=params.model_copy(
                update={"seed": k})) for k in range(args.jobs)]
            t0 = time.time()
            submit_ms = burst(client, jobs, args.submit)
            time.sleep(0.3)
            lines = log.read_text(errors="replace").splitlines()
            ids = {job.id for job in jobs}
            names = set(RECEIVED_ANY.findall("\n".join(lines)))  # this burst's: received since it began
            received = [t for t in stamps(lines, RECEIVED, names) if t >= int(t0 * 1000) / 1000.0]
            handed = stamps(lines, HANDED, ids)
            row = {"submit_ms": submit_ms, "received_span_ms": span_ms(received),
                   "handed_span_ms": span_ms(handed),
                   "handed_after_ms": (max(handed) - t0) * 1000.0 if handed else float("nan")}
            rows.append(row)
            print(f"burst {b}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items()), flush=True)
    print(f"median of {len(rows)} ({args.submit}, {args.jobs} jobs): "
          + ", ".join(f"{k} {statistics.median(r[k] for r in rows):.1f}" for k in rows[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
