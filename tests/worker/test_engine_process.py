"""The engine in its own process: failures at load and while serving, and its end with the worker's.

(Its normal path, jobs and cancels and metrics, runs in test_service.py's engine-process variant and in
every integration test with real `orcd worker` subprocesses, where it is the default.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import fakeredis
import pytest

from gpu.params import SamplingParams
from tests.worker.tiny_model import MAX_CONTEXT, tiny_model  # noqa: F401 (fixture)
from worker.client import Client
from worker.errors import EngineStartFailed
from worker.schemas import Job
from worker.service import WorkerService
from worker.settings import load_settings
from worker.streams import read_log


def settings_for(model, **extra):
    return load_settings(**{"redis_url": "redis://unused", "model": str(model), "backend": "numpy",
                            "max_batch": 4, "max_context": MAX_CONTEXT, "chunk_tokens": 4, "chunk_ms": 0.0,
                            "job_timeout_s": 30, "visibility_timeout_s": 60} | extra)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited
        return stat.read().split(") ")[-1][0] != "Z"


def wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_an_engine_that_cannot_load_stops_the_worker_with_the_engine_process_error(tiny_model):  # noqa: F811
    from gpu.engine import cuda_available

    if cuda_available():
        pytest.skip("this machine has a GPU: the CUDA backend would load")
    with pytest.raises(EngineStartFailed, match=r"^BackendUnavailable: the cuda backend cannot be"):
        WorkerService.load(settings_for(tiny_model, backend="cuda"), fakeredis.FakeRedis(), name="w-bad")


def test_engine_death_fails_its_jobs_clearly_and_the_worker_takes_no_more(tiny_model):  # noqa: F811
    redis = fakeredis.FakeRedis()
    sent: list = []
    settings = settings_for(tiny_model, step_delay_ms=50.0)
    client = Client(settings=settings, redis=redis, sender=lambda job, queue, priority: sent.append(job))
    service = WorkerService.load(settings, redis, name="w-die")
    lost: list[str] = []
    service.on_engine_lost = lost.append
    pid = service.scheduler.pid
    try:
        client.submit(Job(id="long", prompt="Hello", params=SamplingParams(max_tokens=100, seed=1,
                                                                           ignore_eos=True)))
        outcome: dict = {}
        import threading

        payload = sent[-1].model_dump(mode="json")
        runner = threading.Thread(target=lambda: outcome.update(service.run_job(payload)))
        runner.start()
        deadline = time.monotonic() + 30
        while not any(e.type == "tokens" for e in read_log(redis, "long")):
            assert time.monotonic() < deadline, "the job never produced a token"
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)
        runner.join(30)
        assert outcome["status"] == "error"
        log = read_log(redis, "long")
        assert [e.seq for e in log] == list(range(1, len(log) + 1))
        end = log[-1]
        assert (end.type, end.error_type) == ("error", "EngineProcessDied")
        assert end.message == f"job long: engine process {pid} exited with code -9 while serving"
        assert lost == [f"engine process {pid} exited with code -9 while serving"]
        assert service.engine_lost == lost[0]
        client.submit(Job(id="after", prompt="Hello", params=SamplingParams(max_tokens=3, seed=1)))
        assert service.run_job(sent[-1].model_dump(mode="json"))["status"] == "error"
        after = read_log(redis, "after")[-1]
        assert after.error_type == "SchedulerClosed" and "engine process has exited" in after.message
    finally:
        service.close()


def test_the_engine_process_ignores_ctrl_c_and_stops_when_its_worker_says_so(tiny_model):  # noqa: F811
    service = WorkerService.load(settings_for(tiny_model), fakeredis.FakeRedis(), name="w-sigint")
    pid = service.scheduler.pid
    try:
        os.kill(pid, signal.SIGINT)  # what a terminal's Ctrl-C sends the whole foreground group
        os.kill(pid, signal.SIGTERM)
        time.sleep(0.5)
        assert alive(pid)
    finally:
        service.close()
    assert wait_gone(pid, 5.0)


def test_the_engine_process_ends_when_its_worker_is_killed(tiny_model, tmp_path):  # noqa: F811
    script = textwrap.dedent(f"""
        import sys, time, fakeredis
        sys.path.insert(0, {str(os.getcwd())!r})
        from worker.service import WorkerService
        from worker.settings import load_settings
        settings = load_settings(redis_url="redis://unused", model={str(tiny_model)!r}, backend="numpy",
                                 max_batch=2, max_context=64, job_timeout_s=30, visibility_timeout_s=60)
        service = WorkerService.load(settings, fakeredis.FakeRedis(), name="w-parent")
        print(service.scheduler.pid, flush=True)
        time.sleep(120)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(parent.stdout.readline())
        assert alive(child_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert wait_gone(child_pid), f"engine process {child_pid} outlived its killed worker"
    finally:
        parent.kill()
        parent.wait()


def test_the_engine_process_accounts_for_its_time(caplog):
    import logging as logging_

    from worker import engine_child

    class Pipe:
        def __init__(self) -> None:
            self.sent: list = []

        def send(self, message) -> None:
            self.sent.append(message)

    pipe = Pipe()
    outbox = engine_child.Outbox(pipe)
    metrics = engine_child.RemoteMetrics(outbox)
    with caplog.at_level(logging_.INFO, logger="worker.engine_child"):
        metrics.load(active=1, queued=0, kv_slots=1)  # a busy period starts
        metrics.engine_step("decode", 0.25)
        metrics.token()
        metrics.token()
        outbox.flush()
        metrics.load(active=0, queued=0, kv_slots=0)  # and ends: its account is logged
    assert pipe.sent == [("turn", [("metric", "load", (1, 0, 1)), ("metric", "engine_step", ("decode", 0.25)),
                                   ("metric", "tokens", (2,))])]
    (line,) = [r.getMessage() for r in caplog.records]
    assert ": 1 turns, 2 tokens; decode 0.25 s, prefill 0.00 s, sending to the worker 0.00 s" in line


def test_an_engine_process_that_dies_before_loading_stops_the_worker_with_its_exit_code(tiny_model,  # noqa: F811
                                                                                      monkeypatch):
    monkeypatch.setattr(sys, "executable", "/bin/false")  # the child exits at once, saying nothing
    with pytest.raises(EngineStartFailed, match=r"^engine process for .*tiny-queue\.gguf exited with code 1 "
                                                r"before loading the model"):
        WorkerService.load(settings_for(tiny_model), fakeredis.FakeRedis(), name="w-false")
