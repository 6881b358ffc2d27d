"""Fault-injection figures: jobs flowing while a chaos loop SIGKILLs a random `orcd worker` and starts
it again (tests/reliability/chaos.py).

Usage: python bench/chaos_workers.py [--jobs 200] [--workers 3] [--submit-s 40] [--kill-every 2 4]

Workers: numpy backend, tiny synthetic llama, max_batch 4, 15 ms per decode step, job timeout 10 s,
visibility timeout 20 s, restore sweep every 1 s. Prints the kills, each job's outcome (a whole stream
ending done or error, or gap / duplicate / no-end / timeout), how many jobs were re-run after a
crash, and how many outputs differ from an undisturbed single-process run of the same job.
Redis: --redis-url, default db 10 of ORCD_RELIABILITY_REDIS_URL's server, flushed first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from tests.reliability.chaos import run_chaos  # noqa: E402
from tests.reliability.cluster import REDIS_URL, flush  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--submit-s", type=float, default=40.0, help="submissions spread over this many seconds")
    ap.add_argument("--kill-every", type=float, nargs=2, default=(2.0, 4.0), metavar=("MIN", "MAX"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--redis-url", default=REDIS_URL.rsplit("/", 1)[0] + "/10", help="db 10 by default")
    args = ap.parse_args(argv)
    flush(args.redis_url)
    workdir = Path(tempfile.mkdtemp(prefix="orcd-chaos-"))
    print(f"chaos: {args.jobs} jobs over {args.submit_s:g} s, {args.workers} workers, a SIGKILL every "
          f"{args.kill_every[0]:g}-{args.kill_every[1]:g} s; logs in {workdir}", flush=True)
    result = run_chaos(workdir, args.redis_url, n_jobs=args.jobs, n_workers=args.workers,
                       submit_s=args.submit_s, kill_every=tuple(args.kill_every), seed=args.seed,
                       log=lambda line: print(line, flush=True))
    print(f"{result.kills} workers killed; all streams ended {result.seconds:.0f} s after the first submit")
    print(result.tally.summary())
    for c in result.tally.broken[:10]:
        print(f"  BROKEN {c}")
    slowest = max(result.tally.checks, key=lambda c: c.seconds)
    print(f"slowest job stream: {slowest.seconds:.1f} s ({slowest.attempts} attempts)")
    print(f"outputs differing from an undisturbed run: {len(result.mismatched)} {result.mismatched[:5]}")
    return 1 if result.tally.broken or result.mismatched else 0


if __name__ == "__main__":
    raise SystemExit(main())
