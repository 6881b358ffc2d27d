"""Resource-exhaustion figures against a real `orcd worker` (numpy backend, tiny model, max_context 256,
max_batch 2): over-budget jobs are refused at admission and the worker keeps serving.

Usage: python bench/exhaustion.py [--flood 60]

1. KV budget: jobs whose prompt + max_tokens exceed max_context (by 1 token, by 10x, a 1 MB prompt,
   max_tokens at its bound) mixed with good jobs: each bad one must end [queued, error ContextTooLong]
   without a `started` (no KV slot taken); the good ones finish. Time to refusal and worker RSS.
2. Absurd values refused before enqueue (InvalidJob): max_tokens past its bound, negative/NaN sampling.
3. Flood: `--flood` jobs at once on 2 KV slots: all finish (they wait for a slot, none fails).
4. Backpressure: a queue nobody consumes refuses the (max_queue+1)-th job with QueueFull.
5. Host memory: a worker asked for a KV cache that cannot exist (2^27 context x 1024 slots), run under
   a 4 GiB address-space limit (so the machine is safe), must exit non-zero with a one-line "does not
   fit" error (no traceback) before consuming anything.
(Device-side allocation failure injection belongs to the CUDA engine's tests on the GPU host.)
Redis: --redis-url, default db 9 of ORCD_RELIABILITY_REDIS_URL's server, flushed first.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from gpu.params import SamplingParams  # noqa: E402
from tests.reliability.cluster import (  # noqa: E402
    REDIS_URL,
    ROOT,
    Worker,
    client_for,
    flush,
    tiny_model,
    unique_queue,
)
from worker.errors import InvalidJob, QueueFull  # noqa: E402
from worker.schemas import Job  # noqa: E402

MAX_CONTEXT = 256


def kv_budget(client, worker: Worker) -> bool:
    ok = True
    bad = {
        "1 token over": Job(prompt="x" * 200, params=SamplingParams(max_tokens=MAX_CONTEXT - 199, seed=1)),
        "10x over": Job(prompt="y" * 100, params=SamplingParams(max_tokens=10 * MAX_CONTEXT, seed=1)),
        "1 MB prompt": Job(prompt="z" * (1 << 20), params=SamplingParams(max_tokens=1, seed=1)),
        "max_tokens at bound": Job(prompt="w", params=SamplingParams(max_tokens=131072, seed=1)),
    }
    rss_before = worker.rss()
    handles = {}
    for i in range(6):
        good = client.submit(Job(prompt=f"good {i}", params=SamplingParams(max_tokens=20, seed=i,
                                                                             ignore_eos=True)))
        handles[f"good {i}"] = (good, time.monotonic())
        if i < len(bad):
            name = list(bad)[i]
            handles[name] = (client.submit(bad[name]), time.monotonic())
    for name, (handle, submitted) in handles.items():
        events = list(handle.stream(timeout_s=60))
        seconds = time.monotonic() - submitted
        kinds = [e.type for e in events]
        if name.startswith("good"):
            good_ok = kinds[-1] == "done"
            ok &= good_ok
            if not good_ok:
                print(f"  {name}: {kinds}")
            continue
        refused = kinds == ["queued", "error"] and events[-1].error_type == "ContextTooLong"
        ok &= refused
        end = events[-1]
        print(f"  {name:20s} {'refused at admission' if refused else 'NOT refused'}: {kinds}, "
              f"{getattr(end, 'error_type', '')} in {seconds:.2f} s: {getattr(end, 'message', '')[:90]}")
    print(f"  6 good jobs interleaved: {'all done' if ok else 'NOT all done'}; worker RSS "
          f"{rss_before / 2**20:.1f} -> {worker.rss() / 2**20:.1f} MiB")
    return ok


def absurd_values(client) -> bool:
    cases = {
        "max_tokens 2^31": {"prompt": "a", "params": {"max_tokens": 2**31}},
        "temperature -1": {"prompt": "a", "params": {"temperature": -1}},
        "temperature NaN": {"prompt": "a", "params": {"temperature": float("nan")}},
        "top_p inf": {"prompt": "a", "params": {"top_p": float("inf")}},
        "seed -5": {"prompt": "a", "params": {"seed": -5}},
        "logit_bias 1e9": {"prompt": "a", "params": {"logit_bias": {"3": 1e9}}},
        "empty prompt": {"prompt": ""},
        "priority 99": {"prompt": "a", "priority": 99},
    }
    ok = True
    for name, body in cases.items():
        try:
            client.submit(body)
            print(f"  {name:18s} ACCEPTED")
            ok = False
        except InvalidJob as exc:
            first = str(exc).splitlines()[1:3]
            print(f"  {name:18s} InvalidJob: {' | '.join(s.strip() for s in first)[:100]}")
    return ok


def flood(client, n: int) -> bool:
    started = time.monotonic()
    handles = [client.submit(Job(prompt=f"flood {i}", params=SamplingParams(max_tokens=16, seed=i,
                                                                            ignore_eos=True)))
               for i in range(n)]
    ends = [list(h.stream(timeout_s=120))[-1] for h in handles]
    done = sum(e.type == "done" for e in ends)
    seconds = time.monotonic() - started
    print(f"  {n} jobs at once on 2 KV slots: {done} done, {n - done} not, in {seconds:.1f} s")
    return done == n


def backpressure(model, redis_url: str) -> bool:
    queue = unique_queue("full")
    client = client_for(model, queue, redis_url, max_queue=5)
    try:
        for i in range(5):
            client.submit(Job(prompt=f"{i}"))
        try:
            client.submit(Job(prompt="one too many"))
            print("  6th job on a full queue (max_queue 5): ACCEPTED")
            return False
        except QueueFull as exc:
            print(f"  6th job on a full queue: QueueFull: {exc}")
            return True
    finally:
        client.redis.delete(*[k for k in client.redis.keys(f"{queue}*")])
        client.close()


def impossible_kv(workdir: Path, redis_url: str) -> bool:
    from gguf_loader.synthetic import write_synthetic_model

    path = write_synthetic_model(workdir / "long-context.gguf", "llama", vocab="bytes", dim=64, n_layers=2,
                                 n_heads=4, context_length=1 << 27, seed=1)
    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "worker.cli", "worker", "--model", str(path), "--backend",
                           "numpy", "--max-context", str(1 << 27), "--max-batch", "1024", "--redis-url",
                           redis_url, "--queue", unique_queue("oom")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, preexec_fn=limit_memory)
    last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    print(f"  worker with a 2^27 x 1024-slot KV cache: exit {proc.returncode} after "
          f"{time.monotonic() - started:.1f} s: {last[:160]}")
    return proc.returncode != 0 and "does not fit" in proc.stderr and "Traceback" not in proc.stderr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flood", type=int, default=60)
    ap.add_argument("--redis-url", default=REDIS_URL.rsplit("/", 1)[0] + "/9", help="db 9 by default")
    args = ap.parse_args(argv)
    flush(args.redis_url)
    workdir = Path(tempfile.mkdtemp(prefix="orcd-exhaustion-"))
    model = tiny_model(workdir)
    queue = unique_queue("exhaust")
    worker = Worker(model, queue, args.redis_url, workdir, 0, max_batch=2, concurrency=4,
                    max_context=MAX_CONTEXT).start().wait_ready()
    client = client_for(model, queue, args.redis_url)
    results = {}
    try:
        print("1. KV budget at admission")
        results["kv budget"] = kv_budget(client, worker)
        print("2. absurd values refused before enqueue")
        results["absurd values"] = absurd_values(client)
        print("3. flood")
        results["flood"] = flood(client, args.flood)
        print(f"   worker still alive: {worker.alive}")
        print("4. backpressure")
        results["backpressure"] = backpressure(model, args.redis_url)
        print("5. host memory")
        results["impossible KV cache"] = impossible_kv(workdir, args.redis_url)
    finally:
        worker.stop()
        client.close()
    print("held: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in results.items()))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
