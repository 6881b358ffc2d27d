"""Redis restart figures: stop and start a private redis-server with jobs in flight
(tests/reliability/restart.py); the shared server on 6379 is never touched.

Usage: python bench/redis_restart.py [--port 6390] [--down-s 3] [--jobs 16] [--repeat 1]

Runs twice (times --repeat): the server comes back empty (no persistence: queue, logs and job
records are lost), then from its append-only file (fsync always: nothing is lost). Prints, for
each: what a submit and
/health answer during the outage, whether workers and gateway survive and when they are back, how
each in-flight stream ended (30 s without an event counts as a hang), and whether fresh jobs, by the
client and over HTTP, finish after the restart.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from tests.reliability.restart import describe, run_restart  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=6390)
    ap.add_argument("--down-s", type=float, default=3.0)
    ap.add_argument("--jobs", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args(argv)
    failed = False
    deaths = headless = runs = 0
    for persist in (False, True) * args.repeat:
        runs += 1
        workdir = Path(tempfile.mkdtemp(prefix="orcd-restart-"))
        print(f"redis restart, {'append-only file (no loss)' if persist else 'no persistence (data lost)'}; "
              f"logs in {workdir}", flush=True)
        result = run_restart(workdir, port=args.port, persist=persist, n_jobs=args.jobs, down_s=args.down_s,
                             log=lambda line: print(line, flush=True))
        for line in describe(result):
            print("  " + line)
        failed |= bool(result.after.broken) or result.workers_alive < 2 or not result.gateway_alive
        deaths += len(result.worker_deaths)
        headless += bool(result.headless)
    print(f"{runs} restarts: {deaths} of {2 * runs} workers died; runs with streams waiting on a "
          f"headless log: {headless}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
