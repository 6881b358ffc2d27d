"""`orcd batch IN.jsonl -o OUT.jsonl`: offline generation with many jobs in flight.

Each input line is a JSON object: ``prompt`` (or ``messages``), optional ``id``, ``params``,
``chat``, ``system``, ``priority``; missing params take the sampling flags' values. Each output line:
``id``, ``text``, ``finish_reason``, ``usage``, ``timings`` (or ``error``). Resumable: ids already in
OUT are skipped and new lines appended. Progress goes to stderr. Jobs go out through
`Client.submit_many` whenever slots are free (at most --in-flight jobs submitted and not yet done), so
a burst travels as a few Celery messages, not one per job.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .common import add_model_flags, add_sampling_flags, sampling_params_from_args
from .queue_flags import add_connection_flags, add_worker_flags, cancel_quietly, connect, settings_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("batch", help="run a JSONL file of jobs, resumable",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, metavar="IN.jsonl")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.jsonl")
    parser.add_argument("--in-flight", type=int, default=64, help="jobs submitted and not yet done (64)")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="S",
                        help="a job fails after S seconds without an event (600)")
    add_model_flags(parser)
    parser.set_defaults(backend=None)  # unset: ORCD_BACKEND, else auto
    add_sampling_flags(parser)
    add_connection_flags(parser)
    add_worker_flags(parser)
    parser.set_defaults(func=run)


def read_requests(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(id, job fields) per non-empty line; ids default to the line number."""
    requests = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: not JSON: {exc}") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object")
        requests.append((str(record.pop("id", f"line-{lineno}")), record))
    return requests


def done_ids(path: Path) -> set[str]:
    if not path.exists():
        return set()
    ids = set()
    for line in path.read_text().splitlines():
        try:
            ids.add(str(json.loads(line)["id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by an interrupted run: that job runs again
    return ids


def run(args: argparse.Namespace) -> int:
    from worker.errors import JobError, QueueFull
    from worker.schemas import Job

    defaults = sampling_params_from_args(args).model_dump(exclude_unset=True)
    requests = read_requests(args.input)
    finished = done_ids(args.output)
    todo = [(rid, fields) for rid, fields in requests if rid not in finished]
    print(f"orcd batch: {len(requests)} jobs, {len(requests) - len(todo)} already in {args.output}, "
          f"{len(todo)} to run", file=sys.stderr)
    if not todo:
        return 0
    settings = settings_from_args(args)
    lock = threading.Lock()
    stopping = threading.Event()
    in_flight: set[str] = set()
    slots = threading.BoundedSemaphore(args.in_flight)
    counts = {"done": 0, "error": 0, "tokens": 0}
    start = time.monotonic()

    def write(out: dict[str, Any]) -> None:
        with lock:
            with args.output.open("a") as f:
                f.write(json.dumps(out, ensure_ascii=False) + "\n")
            counts["error" if "error" in out else "done"] += 1
            counts["tokens"] += out.get("usage", {}).get("completion_tokens", 0)
            n = counts["done"] + counts["error"]
            rate = counts["tokens"] / max(time.monotonic() - start, 1e-9)
            print(f"\rorcd batch: {n}/{len(todo)} ({counts['error']} errors), {rate:.1f} tok/s",
                  end="" if n < len(todo) else "\n", file=sys.stderr, flush=True)

    def follow(rid: str, handle) -> None:
        out: dict[str, Any] = {"id": rid}
        try:
            result = handle.result(timeout_s=args.timeout)
            timings = result.timings.model_dump() if result.timings else None
            out.update(text=result.text, finish_reason=result.finish_reason, usage=result.usage.model_dump(),
                       timings=timings)
        except (JobError, ValueError, TypeError) as exc:  # this line's job fails, the batch goes on
            out["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            in_flight.discard(handle.id)
            slots.release()
        if not stopping.is_set():
            write(out)

    jobs = []  # (line id, Job) of the valid lines; the others are written as errors at once
    for rid, fields in todo:
        try:
            fields = dict(fields)
            fields["params"] = defaults | fields.get("params", {})
            if "messages" not in fields:
                fields.setdefault("chat", args.chat)
            jobs.append((rid, Job.model_validate(fields)))
        except (ValueError, TypeError) as exc:
            write({"id": rid, "error": f"{type(exc).__name__}: {exc}"})

    with connect(settings) as client, ThreadPoolExecutor(max_workers=args.in_flight) as pool:
        futures = []
        try:
            k = 0
            while k < len(jobs):
                slots.acquire()  # at least one free slot, then every other one free now
                window = 1
                while k + window < len(jobs) and slots.acquire(blocking=False):
                    window += 1
                part = jobs[k:k + window]
                while True:
                    try:
                        handles = client.submit_many([job for _rid, job in part])
                        break
                    except QueueFull:  # all or none: try again later, with fewer if more than one
                        if window > 1:
                            for _ in range(window - window // 2):
                                slots.release()
                            window //= 2
                            part = part[:window]
                        time.sleep(0.5)
                in_flight.update(h.id for h in handles)
                futures += [pool.submit(follow, rid, h) for (rid, _job), h in zip(part, handles, strict=True)]
                k += window
            for future in futures:
                future.result()
        except KeyboardInterrupt:  # stop submitting; jobs in flight end with `cancelled`, not written
            stopping.set()
            cancel_quietly(client, list(in_flight))
            raise
    return 1 if counts["error"] else 0
