"""`orcd status`: live workers (from their heartbeats), the models they serve, and queue depths."""

from __future__ import annotations

import argparse
import json
import time

from .queue_flags import settings_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="workers, models and queue depths",
                                   description=__doc__)
    parser.add_argument("--redis-url", default=None, metavar="URL", help="broker (default ORCD_REDIS_URL)")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.set_defaults(func=run)


def collect(client) -> dict:
    """Workers and the depth of every queue a worker serves or that holds jobs."""
    from worker import keys

    workers = client.workers()
    queues = {w["queue"] for w in workers}
    for name in client.redis.scan_iter(match=f"{keys.PREFIX}.*", count=200, _type="list"):
        queues.add(name.decode().split(keys.PRIORITY_SEP)[0])
    depths = {q: client.queue_depth(q) for q in sorted(queues)}
    return {"workers": workers, "queues": depths}


def run(args: argparse.Namespace) -> int:
    from worker.client import Client
    from worker.errors import SettingsError

    settings = settings_from_args(args)
    if not settings.redis_url:
        raise SettingsError("orcd status needs ORCD_REDIS_URL or --redis-url (the embedded server is private "
                            "to the command that starts it)")
    client = Client(settings=settings)
    try:
        report = collect(client)
    finally:
        client.close()
    if args.json:
        print(json.dumps(report))
        return 0
    now = time.time()
    print(f"{len(report['workers'])} worker(s)")
    for w in report["workers"]:
        age = now - float(w.get("ts", now))
        vram = f", {int(w['free_vram']) >> 20} MiB free" if "free_vram" in w else ""
        print(f"  {w['name']}: model {w['model']} on {w['backend']} gpu {w['gpu']}{vram}; "
              f"{w['active']} running, {w['queued']} waiting (batch {w['max_batch']}); seen {age:.1f} s ago")
    models = sorted({w["model"] for w in report["workers"]})
    print(f"models: {', '.join(models) or '-'}")
    print("queues:")
    for queue, depth in report["queues"].items():
        print(f"  {queue}: {depth} waiting")
    return 0
