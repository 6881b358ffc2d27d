"""bench/llama_probe.py without llama.cpp: the variant table, the result parsing, the subprocess runner
(signals, timeouts that kill the whole process group) and an end-to-end survey against a fake
`llama_cpp` package whose model answers token (3 * last + 1) % 50 and which can be told to SIGSEGV."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("llama_probe", ROOT / "bench" / "llama_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FAKE_PEER = '''
"""A stand-in for llama_cpp: a model of 50 tokens whose next token is (3 * last + 1) % 50."""
import ctypes, os, signal

N_VOCAB = 50
llama_token = ctypes.c_int32
llama_log_callback = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_logits = (ctypes.c_float * N_VOCAB)()

def llama_log_set(callback, user_data):
    pass

def _feed(ids):
    if os.environ.get("FAKE_PEER_CRASH"):
        os.kill(os.getpid(), signal.SIGSEGV)
    for i in range(N_VOCAB):
        _logits[i] = 0.0
    _logits[(3 * ids[-1] + 1) % N_VOCAB] = 1.0

def llama_get_logits_ith(ctx, i):
    return ctypes.cast(_logits, ctypes.POINTER(ctypes.c_float))

class Llama:
    def __init__(self, model_path, n_gpu_layers, n_ctx, verbose):
        self.ctx = 1
        if os.environ.get("FAKE_PEER_CRASH"):
            _feed([0])
    def n_vocab(self):
        return N_VOCAB
    def eval(self, ids):
        _feed(list(ids))

class _Params:
    n_gpu_layers = 0
    n_ctx = 0

def llama_backend_init(): pass
def llama_model_default_params(): return _Params()
def llama_context_default_params(): return _Params()
def llama_model_load_from_file(path, params): return 1
def llama_model_get_vocab(model): return 1
def llama_vocab_n_tokens(vocab): return N_VOCAB
def llama_init_from_model(model, params): return 1
def llama_batch_get_one(arr, n): return list(arr)[:n]
def llama_decode(ctx, batch):
    _feed(batch)
    return 0
def llama_free(ctx): pass
def llama_model_free(model): pass
'''


@pytest.fixture
def fake_peer(tmp_path, monkeypatch):
    (tmp_path / "llama_cpp").mkdir()
    (tmp_path / "llama_cpp" / "__init__.py").write_text(textwrap.dedent(FAKE_PEER))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{ROOT}")
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    return model


def expected_tokens(probe) -> list[int]:
    last, out = probe.prompt_ids(50)[-1], []
    for _ in range(probe.N_TOKENS):
        last = (3 * last + 1) % 50
        out.append(last)
    return out


def test_variant_table_covers_the_brief(probe):
    assert list(probe.VARIANTS) == ["default", "quiet", "log-noop", "log-null", "low-level", "cpu-only",
                                    "no-cuda-graphs", "preload-global", "ld-preload", "torch-first", "raw",
                                    "raw-stdcpp-local"]
    assert probe.VARIANTS["no-cuda-graphs"][1] == {"GGML_CUDA_DISABLE_GRAPHS": "1"}
    assert probe.VARIANTS["ld-preload"][1] == {"LD_PRELOAD": "libstdc++.so.6"}
    assert probe.prompt_ids(50) == [(7 * i + 1) % 50 for i in range(16)]


def test_signal_names_and_result_parsing(probe):
    assert [probe.signal_name(rc) for rc in (-11, -6, 0, 1, None)] == ["SIGSEGV", "SIGABRT", None, None, None]
    out = "noise\nPROBE_RESULT {\"load_s\": 1.5}\nmore noise\nPROBE_RESULT {\"load_s\": 2.0, \"tok_s\": 10}\n"
    assert probe.parse_result(out) == {"load_s": 2.0, "tok_s": 10}
    assert probe.parse_result("print_info: n_layer_all = 30\n") is None
    assert probe.tail("\n".join(str(i) for i in range(40)) + "\n") == [str(i) for i in range(10, 40)]
    assert probe.tail("  \n") == []


def test_a_crash_is_a_record_with_its_signal(probe):
    run = probe.run_command([sys.executable, "-c", "import os, signal, sys; print('n_layer_all', "
                             "file=sys.stderr, flush=True); os.kill(os.getpid(), signal.SIGSEGV)"], {}, 20)
    rec = probe.record("default", run)
    assert (rec["rc"], rec["signal"], rec["timed_out"], rec["load_s"], rec["tok_s"]) == (
        -11, "SIGSEGV", False, None, None)
    assert rec["stderr_tail"] == ["n_layer_all"]
    assert probe.format_line(rec).startswith("default           rc=-11 SIGSEGV")
    assert probe.format_line(rec).endswith("no load                      | n_layer_all")


def test_a_timeout_kills_the_whole_process_group(probe, tmp_path):
    pid_file = tmp_path / "pid"
    code = ("import subprocess, time; p = subprocess.Popen(['sleep', '60']); "
            f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    t0 = time.monotonic()
    run = probe.run_command([sys.executable, "-c", code], {}, 1.5)
    assert run["rc"] is None and time.monotonic() - t0 < 10
    assert probe.format_line(probe.record("raw", run)).startswith("raw               TIMEOUT")
    grandchild = Path(f"/proc/{pid_file.read_text()}/stat")
    deadline = time.monotonic() + 5
    while grandchild.exists() and grandchild.read_text().split()[2] != "Z" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not grandchild.exists() or grandchild.read_text().split()[2] == "Z"  # gone, or a dead zombie


def test_survey_against_a_fake_peer(probe, fake_peer, tmp_path, capsys):
    out = tmp_path / "probe.json"
    names = ["default", "quiet", "log-noop", "log-null", "low-level", "cpu-only"]
    assert probe.main([str(fake_peer), "--only", ",".join(names), "--out", str(out), "--timeout", "30"]) == 0
    records = json.loads(out.read_text())
    assert [(r["variant"], r["rc"], r["signal"], r["tokens"]) for r in records] == [
        (name, 0, None, expected_tokens(probe)) for name in names]
    assert all(r["tok_s"] > 0 and r["load_s"] >= 0 for r in records)
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"summary: 6/6 ran: {', '.join(names)}"
    assert [line.split()[0] for line in lines[1:-1]] == names


def test_survey_reports_a_crashing_peer_and_goes_on(probe, fake_peer, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_PEER_CRASH", "1")
    out = tmp_path / "probe.json"
    assert probe.main([str(fake_peer), "--only", "default,low-level", "--out", str(out)]) == 0
    records = json.loads(out.read_text())
    assert [(r["variant"], r["rc"], r["signal"], r["tokens"]) for r in records] == [
        ("default", -11, "SIGSEGV", None), ("low-level", -11, "SIGSEGV", None)]
    assert records[0]["stderr_tail"][-1] == "probe stage: load"
    assert capsys.readouterr().out.splitlines()[-1] == "summary: 0/2 ran: none"


def test_a_spent_budget_skips_the_rest(probe, fake_peer, tmp_path, capsys):
    out = tmp_path / "probe.json"
    assert probe.main([str(fake_peer), "--only", "default,quiet", "--out", str(out), "--budget", "0"]) == 0
    records = json.loads(out.read_text())
    assert [(r["variant"], r["skipped"], r["timed_out"], r["stderr_tail"]) for r in records] == [
        ("default", True, False, ["survey budget spent"]), ("quiet", True, False, ["survey budget spent"])]
    assert capsys.readouterr().out.splitlines()[1].startswith("default           SKIPPED")
