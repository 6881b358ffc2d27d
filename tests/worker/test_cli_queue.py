"""`orcd generate`, `orcd batch`, `orcd demo` in embedded mode (private Valkey + in-process worker).

Subprocesses with no ORCD_* variables, on the tiny model and the numpy backend; marker `integration`
(they start a Valkey server).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.worker.tiny_model import tiny_model  # noqa: F401 (fixture)
from tests.worker.workers import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def orcd(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCD_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "worker.cli", *argv], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=100)


def test_generate_gives_the_same_text_as_run(tiny_model):  # noqa: F811
    flags = ["--model", str(tiny_model), "--backend", "numpy", "--seed", "3", "--max-tokens", "12",
             "--temperature", "0.9"]
    generated = orcd("generate", "Hello there", *flags)
    ran = orcd("run", "Hello there", *flags)
    assert generated.returncode == 0, generated.stderr
    assert ran.returncode == 0, ran.stderr
    assert generated.stdout == ran.stdout and len(generated.stdout) > 0
    assert "starting a private Valkey server and an in-process worker" in generated.stderr
    assert "orcd generate: length; 8 prompt + 12 generated tokens" in generated.stderr


def test_generate_reports_a_job_error(tiny_model):  # noqa: F811
    result = orcd("generate", "x", "--model", str(tiny_model), "--backend", "numpy", "--max-tokens", "600",
                  "--max-context", "64")
    assert result.returncode == 1
    assert "orcd generate: ContextTooLong: job " in result.stderr


def test_batch_runs_every_line_and_resumes(tiny_model, tmp_path):  # noqa: F811
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = [{"id": "a", "prompt": "one", "params": {"seed": 1}},
             {"prompt": "two", "params": {"seed": 2, "max_tokens": 3}},
             {"id": "c", "prompt": "three", "params": {"temperature": -1}}]
    src.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    flags = ["--model", str(tiny_model), "--backend", "numpy", "--max-tokens", "5", "--ignore-eos"]
    first = orcd("batch", str(src), "-o", str(out), *flags)
    assert first.returncode == 1  # line c is invalid
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(records) == ["a", "c", "line-2"]
    assert records["a"]["usage"] == {"prompt_tokens": 2, "completion_tokens": 5}  # BOS + "one"
    two = records["line-2"]
    assert (two["usage"]["completion_tokens"], two["finish_reason"]) == (3, "length")
    assert records["c"]["error"].startswith("ValidationError: ")
    assert "orcd batch: 3/3 (1 errors)" in first.stderr
    with src.open("a") as f:
        f.write(json.dumps({"id": "d", "prompt": "four", "params": {"seed": 4}}) + "\n")
    second = orcd("batch", str(src), "-o", str(out), *flags)
    assert second.returncode == 0, second.stderr
    assert "4 jobs, 3 already in" in second.stderr and "1 to run" in second.stderr
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()][-1] == "d"
    assert len(out.read_text().splitlines()) == 4


def test_demo_streams_concurrent_jobs(tiny_model):  # noqa: F811
    result = orcd("demo", "--model", str(tiny_model), "--backend", "numpy", "-j", "3", "-n", "6")
    assert result.returncode == 0, result.stderr
    assert [line[:3] for line in result.stdout.splitlines() if line.startswith("[")] == ["[1]", "[2]", "[3]"]
    assert sum(line.endswith("tok/s") for line in result.stderr.splitlines()) == 3


def test_ctrl_c_cancels_the_job_and_exits_promptly(tiny_model):  # noqa: F811
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCD_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "-v", "generate", "Hi", "--model", str(tiny_model), "--backend",
         "numpy", "-n", "300", "--ignore-eos", "--max-context", "512", "--step-delay-ms", "50"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "orcd generate: started on" in line:
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    asked = time.monotonic()
    rest = proc.stderr.read()
    assert proc.wait(30) == 130
    assert time.monotonic() - asked < 15.0
    assert "cancelled after" in rest  # the scheduler stopped the job; the worker drained; no hang
