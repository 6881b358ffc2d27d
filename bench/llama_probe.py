"""Why does the llama-cpp-python CUDA build crash on load? Try it under several variants, each in its own
process (60 s timeout), and print one line per variant: exit code, signal, seconds, tok/s of a 16-token
greedy decode when it got that far, and the last stderr line.

Usage: python3 bench/llama_probe.py MODEL.gguf [--out FILE.json] [--only NAME,...] [--timeout 60]
       [--budget 480]   (seconds for the whole survey: variants past it are recorded as skipped)

The suspect (read from the build, docs/benchmarks.md): libllama.so and libggml*.so each link libstdc++
statically and export it; libllama.so has no NEEDED libstdc++.so.6 and takes locale/iostream symbols
from libggml-cuda.so's copy. The crash comes right after `print_info: n_layer_all`, at the first
numeric stream insertion of the load (`ss << n_head` in print_info). Facet ids such as
`std::numpunct<char>::id` are STB_GNU_UNIQUE: the dynamic linker binds them process-wide to the first
copy loaded, RTLD_LOCAL or not, e.g. the system libstdc++.so.6 that numpy's extension modules pull in,
so two libstdc++ builds would share facet numbering. Variants that put one libstdc++.so.6 in the
global scope first (`preload-global`, `ld-preload`, `torch-first`) against those that don't (`raw`,
no numpy at all; `raw-stdcpp-local`) tell whether that is it. Each child prints which libstdc++ /
libllama / libggml files it has mapped just before loading.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

N_TOKENS = 16
TIMEOUT_S = 60.0
BUDGET_S = 480.0  # the whole survey, gdb included, stays under a 10-minute device command
MIN_S = 5.0  # a variant is skipped rather than run with less time than this
TAIL_LINES = 30
RESULT_TAG = "PROBE_RESULT "
STDCPP = "libstdc++.so.6"

# name -> (what it changes, environment overrides); the child's code branches on the name
VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "default": ("Llama(n_gpu_layers=-1, verbose=True)", {}),
    "quiet": ("verbose=False", {}),
    "log-noop": ("llama_log_set(no-op C callback) before loading", {}),
    "log-null": ("llama_log_set(NULL): llama.cpp's own stderr logger", {}),
    "low-level": ("llama_backend_init + llama_model_load_from_file, no Llama class", {}),
    "cpu-only": ("n_gpu_layers=0", {}),
    "no-cuda-graphs": ("GGML_CUDA_DISABLE_GRAPHS=1", {"GGML_CUDA_DISABLE_GRAPHS": "1"}),
    "preload-global": (f"ctypes.CDLL({STDCPP}, RTLD_GLOBAL) before import llama_cpp", {}),
    "ld-preload": (f"LD_PRELOAD={STDCPP}", {"LD_PRELOAD": STDCPP}),
    "torch-first": ("import torch before llama_cpp (loads its deps RTLD_GLOBAL)", {}),
    "raw": ("ctypes only: no numpy, no llama_cpp package; load only", {}),
    "raw-stdcpp-local": (f"raw, after ctypes.CDLL({STDCPP}) RTLD_LOCAL", {}),
}


# ---- the child: one variant in this process --------------------------------------------------------

def stage(text: str) -> None:
    print(f"probe stage: {text}", file=sys.stderr, flush=True)


def show_maps() -> None:
    """The libstdc++ / llama / ggml / cudart files this process has mapped (stderr)."""
    try:
        paths = {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
                 if len(line.split()) >= 6}
    except OSError:
        return
    keys = ("libstdc++", "libllama", "libggml", "cudart")
    for path in sorted(p for p in paths if any(k in p for k in keys)):
        print(f"probe mapped: {path}", file=sys.stderr, flush=True)


def lib_dir() -> Path:
    """llama_cpp's lib folder, found without importing the package (LLAMA_CPP_LIB_PATH wins)."""
    if os.environ.get("LLAMA_CPP_LIB_PATH"):
        return Path(os.environ["LLAMA_CPP_LIB_PATH"])
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llama_cpp is not importable (PYTHONPATH?)")
    return Path(list(spec.submodule_search_locations)[0]) / "lib"


def greedy(decode_last, prompt: list[int], n_vocab: int) -> tuple[list[int], float]:
    """Feed the prompt, then N_TOKENS argmax tokens; decode_last(ids) -> logits [n_vocab] of the last."""
    import numpy as np

    logits = decode_last(prompt)
    out, t0 = [], time.perf_counter()
    for _ in range(N_TOKENS):
        out.append(int(np.argmax(logits[:n_vocab])))
        logits = decode_last([out[-1]])
    return out, N_TOKENS / (time.perf_counter() - t0)


def child_high_level(name: str, path: str) -> dict:
    if name == "preload-global":
        ctypes.CDLL(STDCPP, mode=ctypes.RTLD_GLOBAL)
    if name == "torch-first":
        import torch  # noqa: F401
    stage("import llama_cpp")
    import llama_cpp
    import numpy as np

    if name == "log-noop":
        noop = llama_cpp.llama_log_callback(lambda level, text, user: None)
        llama_cpp.llama_log_set(noop, ctypes.c_void_p(0))
        globals()["_keep_callback"] = noop  # a callback freed while C holds it would crash on its own
    elif name == "log-null":
        llama_cpp.llama_log_set(llama_cpp.llama_log_callback(), ctypes.c_void_p(0))
    show_maps()
    stage("load")
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path=path, n_gpu_layers=0 if name == "cpu-only" else -1, n_ctx=256,
                          verbose=name != "quiet")
    load_s = time.perf_counter() - t0
    n_vocab = llm.n_vocab()

    def decode_last(ids: list[int]):
        llm.eval(ids)
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))

    stage("decode")
    tokens, tok_s = greedy(decode_last, prompt_ids(n_vocab), n_vocab)
    return {"load_s": load_s, "tokens": tokens, "tok_s": tok_s}


def child_low_level(path: str) -> dict:
    stage("import llama_cpp")
    import llama_cpp as ll
    import numpy as np

    show_maps()
    stage("load")
    ll.llama_backend_init()
    params = ll.llama_model_default_params()
    params.n_gpu_layers = -1
    t0 = time.perf_counter()
    model = ll.llama_model_load_from_file(path.encode(), params)
    if not model:
        raise RuntimeError("llama_model_load_from_file returned NULL")
    load_s = time.perf_counter() - t0
    n_vocab = ll.llama_vocab_n_tokens(ll.llama_model_get_vocab(model))
    cparams = ll.llama_context_default_params()
    cparams.n_ctx = 256
    ctx = ll.llama_init_from_model(model, cparams)
    if not ctx:
        raise RuntimeError("llama_init_from_model returned NULL")

    def decode_last(ids: list[int]):
        arr = (ll.llama_token * len(ids))(*ids)
        rc = ll.llama_decode(ctx, ll.llama_batch_get_one(arr, len(ids)))
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        return np.ctypeslib.as_array(ll.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))

    stage("decode")
    tokens, tok_s = greedy(decode_last, prompt_ids(n_vocab), n_vocab)
    ll.llama_free(ctx)
    ll.llama_model_free(model)
    return {"load_s": load_s, "tokens": tokens, "tok_s": tok_s}


class RawModelParams(ctypes.Structure):
    """struct llama_model_params as libllama.so's llama_model_default_params writes it: 80 bytes,
    n_gpu_layers the int32 at offset 16 (same offsets as llama_cpp.llama_model_params)."""

    _fields_ = [("bytes", ctypes.c_ubyte * 80)]


def child_raw(name: str, path: str) -> dict:
    """Load through ctypes alone: no numpy and no llama_cpp package in the process."""
    if name == "raw-stdcpp-local":
        ctypes.CDLL(STDCPP)
    lib = ctypes.CDLL(str(lib_dir() / "libllama.so"))
    lib.llama_model_default_params.restype = RawModelParams
    lib.llama_model_load_from_file.argtypes = [ctypes.c_char_p, RawModelParams]
    lib.llama_model_load_from_file.restype = ctypes.c_void_p
    lib.llama_model_free.argtypes = [ctypes.c_void_p]
    show_maps()
    stage("load")
    lib.llama_backend_init()
    params = lib.llama_model_default_params()
    ctypes.c_int32.from_buffer(params.bytes, 16).value = -1  # n_gpu_layers
    t0 = time.perf_counter()
    model = lib.llama_model_load_from_file(path.encode(), params)
    if not model:
        raise RuntimeError("llama_model_load_from_file returned NULL")
    load_s = time.perf_counter() - t0
    lib.llama_model_free(model)
    return {"load_s": load_s}


def prompt_ids(n_vocab: int) -> list[int]:
    return [(7 * i + 1) % n_vocab for i in range(N_TOKENS)]


def child(name: str, path: str) -> int:
    stage(f"variant {name}")
    if name in ("raw", "raw-stdcpp-local"):
        result = child_raw(name, path)
    elif name == "low-level":
        result = child_low_level(path)
    else:
        result = child_high_level(name, path)
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


# ---- the parent: every variant in a subprocess ------------------------------------------------------

def run_command(command: list[str], env: dict[str, str], timeout_s: float) -> dict:
    """Run in a new session; on timeout kill its whole process group. rc (None on timeout), output."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        rc = None
    return {"rc": rc, "seconds": round(time.perf_counter() - t0, 2),
            "stdout": out.decode(errors="replace"), "stderr": err.decode(errors="replace")}


def signal_name(rc: int | None) -> str | None:
    """SIGSEGV for -11 (killed by a signal), None for a normal exit or a timeout."""
    if rc is None or rc >= 0:
        return None
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def parse_result(stdout: str) -> dict | None:
    """The child's result record (the last RESULT_TAG line), None if it never printed one."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    return None


def tail(text: str, n: int = TAIL_LINES) -> list[str]:
    return text.rstrip("\n").splitlines()[-n:] if text.strip() else []


def record(name: str, run: dict) -> dict:
    result = parse_result(run["stdout"])
    return {"variant": name, "what": VARIANTS[name][0] if name in VARIANTS else name, "rc": run["rc"],
            "signal": signal_name(run["rc"]), "skipped": run.get("skipped", False),
            "timed_out": run["rc"] is None and not run.get("skipped"), "seconds": run["seconds"],
            "load_s": None if result is None else round(result["load_s"], 3),
            "tok_s": None if result is None or "tok_s" not in result else round(result["tok_s"], 1),
            "tokens": None if result is None else result.get("tokens"),
            "stderr_tail": tail(run["stderr"])}


def format_line(rec: dict) -> str:
    status = "SKIPPED" if rec["skipped"] else "TIMEOUT" if rec["timed_out"] else f"rc={rec['rc']}"
    status += f" {rec['signal']}" if rec["signal"] else ""
    speed = f"load {rec['load_s']} s" if rec["load_s"] is not None else "no load"
    if rec["tok_s"] is not None:
        speed += f", {rec['tok_s']} tok/s"
    last = rec["stderr_tail"][-1][:100] if rec["stderr_tail"] else ""
    return f"{rec['variant']:<17} {status:<14} {rec['seconds']:>6.1f} s  {speed:<28} | {last}"


def gdb_record(path: str, timeout_s: float) -> dict | None:
    """The default variant under gdb: the native backtrace at the crash (None without gdb)."""
    gdb = shutil.which("gdb")
    if gdb is None:
        return None
    command = [gdb, "-batch", "-ex", "run", "-ex", "bt 40", "--args", sys.executable, __file__,
               "--child", "default", path]
    run = run_command(command, dict(os.environ), timeout_s)
    rec = record("gdb", run)
    rec["stderr_tail"] = tail(run["stdout"] + run["stderr"], 60)  # gdb prints the backtrace on stdout
    return rec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a GGUF file")
    parser.add_argument("--out", type=Path, help="write every record (stderr tails included) as JSON")
    parser.add_argument("--only", help="comma-separated variant names (default: all)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per variant")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole survey")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.model)
    names = args.only.split(",") if args.only else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    print(f"python {sys.version.split()[0]}, gdb {shutil.which('gdb')}, "
          f"torch {'yes' if importlib.util.find_spec('torch') else 'no'}, model {args.model}")
    records, deadline = [], time.monotonic() + args.budget
    for name in names:
        timeout_s = min(args.timeout, deadline - time.monotonic())
        if timeout_s < MIN_S:
            run = {"rc": None, "seconds": 0.0, "stdout": "", "stderr": "survey budget spent", "skipped": True}
        else:
            env = dict(os.environ, **VARIANTS[name][1])
            try:
                run = run_command([sys.executable, __file__, "--child", name, args.model], env, timeout_s)
            except OSError as exc:  # never stop the survey: one variant failing to start is a record
                run = {"rc": -1, "seconds": 0.0, "stdout": "", "stderr": f"could not start: {exc}"}
        records.append(record(name, run))
        print(format_line(records[-1]), flush=True)
    timeout_s = min(2 * args.timeout, deadline - time.monotonic())
    if not args.only and timeout_s >= MIN_S:
        rec = gdb_record(args.model, timeout_s)
        if rec is not None:
            records.append(rec)
            print("gdb backtrace:\n  " + "\n  ".join(rec["stderr_tail"]), flush=True)
    ok = [r["variant"] for r in records if r["rc"] == 0]
    print(f"summary: {len(ok)}/{len(records)} ran: {', '.join(ok) or 'none'}")
    if args.out:
        args.out.write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
