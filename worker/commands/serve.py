"""`orcd serve`: the HTTP gateway (SSE, OpenAI-compatible API, playground) in front of the queue."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="run the HTTP gateway (POST /execute, /v1/*, playground at /)")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1; ORCD_GATEWAY_HOST)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000; ORCD_GATEWAY_PORT)")
    p.add_argument("--redis-url", default=None, help="the queue's Redis (ORCD_GATEWAY_REDIS_URL)")
    p.add_argument("--max-body-bytes", type=int, default=None, help="larger request bodies get 413")
    p.add_argument(
        "--max-queue", type=int, default=None, help="429 at this many waiting jobs (ORCD_MAX_QUEUE)"
    )
    p.add_argument("--keepalive-s", type=float, default=None, help="SSE keep-alive comment interval")
    p.add_argument(
        "--no-cancel-on-disconnect",
        dest="cancel_on_disconnect",
        action="store_false",
        default=None,
        help="keep a job running when its streaming client goes away",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from worker.client import Client
    from worker.errors import SettingsError
    from worker.gateway import create_app
    from worker.gateway_redis import RedisBackend
    from worker.gateway_settings import LOCAL_REDIS, GatewaySettings
    from worker.settings import load_settings

    overrides = {
        k: getattr(args, k)
        for k in (
            "host",
            "port",
            "redis_url",
            "max_body_bytes",
            "max_queue",
            "keepalive_s",
            "cancel_on_disconnect",
        )
    }
    try:
        settings = GatewaySettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SettingsError(f"invalid gateway settings (flags or ORCD_GATEWAY_*): {problems}") from None
    queue_settings = load_settings(redis_url=settings.redis_url, max_queue=settings.max_queue)
    if not queue_settings.redis_url:
        queue_settings = queue_settings.model_copy(update={"redis_url": LOCAL_REDIS})
    backend = RedisBackend(Client(settings=queue_settings), retry_after_s=settings.retry_after_s)
    app = create_app(backend, settings)
    print(
        f"orcd serve: http://{settings.host}:{settings.port}/ (queue at {queue_settings.redis_url})",
        flush=True,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info" if args.verbose else "warning",
        timeout_graceful_shutdown=5,
    )
    return 0
