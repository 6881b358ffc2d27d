"""HTTP fuzzing figures for the gateway (tests/reliability/http_fuzz.py).

Usage: python bench/fuzz_gateway.py [--examples 300] [--fake-examples 2000] [--port 6392]

1. The in-memory fake backend (the gateway's own test backend), in process: `--fake-examples`
   schemathesis requests per operation of /openapi.json.
2. The real stack: a private redis-server on `--port`, one `orcd worker` (numpy, tiny model, context
   256) and `orcd serve`: `--examples` requests per operation over HTTP, then the hand-written hostile
   requests. Prints status counts per operation, every 5xx (other than the documented 503 for a model
   with no live worker) with an example, and each hostile request's status and error.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

import httpx  # noqa: E402
import schemathesis  # noqa: E402

from tests.reliability.cluster import Gateway, PrivateRedis, Worker, tiny_model  # noqa: E402
from tests.reliability.http_fuzz import MODEL, schema_fuzz, send_hostile  # noqa: E402


def show(title: str, result) -> int:
    print(title)
    ops = sorted({op for op, _ in result.statuses})
    for op in ops:
        counts = ", ".join(f"{status}: {n}" for (o, status), n in sorted(result.statuses.items()) if o == op)
        print(f"  {op:28s} {counts}")
    for (op, status), example in result.server_errors.items():
        print(f"  {status} on {op}: {example[:300]}")
    print(f"  5xx other than 503 no_worker: {len(result.bad)}")
    return len(result.bad)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=300)
    ap.add_argument("--fake-examples", type=int, default=2000)
    ap.add_argument("--port", type=int, default=6392)
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    from gguf_loader.assets import DEFAULT_MODEL
    from worker.gateway import create_app
    from worker.gateway_fake import FakeBackend

    app = create_app(FakeBackend(models=(DEFAULT_MODEL, MODEL)))
    bad = show(f"1. fake backend, {args.fake_examples} requests per operation",
               schema_fuzz(schemathesis.openapi.from_asgi("/openapi.json", app), args.fake_examples))

    workdir = Path(tempfile.mkdtemp(prefix="orcd-fuzz-gateway-"))
    server = PrivateRedis(args.port, workdir).start()
    worker = Worker(tiny_model(workdir), None, server.url, workdir, 0, max_batch=4, concurrency=8).start()
    gateway = Gateway(server.url, workdir, env={"ORCD_GATEWAY_DEFAULT_MODEL": MODEL})
    try:
        worker.wait_ready()
        gateway.wait_ready()
        schema = schemathesis.openapi.from_url(gateway.url + "/openapi.json")
        schema = schema.configure(base_url=gateway.url) if hasattr(schema, "configure") else schema
        bad += show(f"2. real stack (Redis, orcd worker, orcd serve), {args.examples} requests per operation",
                    schema_fuzz(schema, args.examples))
        print("3. hostile requests on the real stack")
        with httpx.Client(base_url=gateway.url) as client:
            for r in send_hostile(client):
                print(f"  {r.name:28s} {'' if r.ok else 'NOT CLEAR '}{r.status} {r.detail[:110]}")
                bad += not r.ok
        print(f"worker alive after all that: {worker.alive}; gateway alive: {gateway.proc.poll() is None}")
        server_errors = sum("Traceback" in line for line in gateway.log.read_text().splitlines())
        print(f"tracebacks in the gateway log: {server_errors}; logs in {workdir}")
    finally:
        gateway.stop()
        worker.stop()
        server.stop()
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
