"""GPU benchmark (run on the device): the CUDA engine next to llama.cpp (CUDA) and HF transformers
(eager, bf16) on the same card, in one run.

Models: random-weight GGUFs of Qwen2.5-0.5B shape (F16, Q8_0) and Phi-3-mini shape (F16), written here
with gguf_loader.synthetic (HF builds the same shapes from a config, random weights). Figures: decode
tok/s at batch 1/8/32/64 (32-token prompts, greedy, 64 steps, logits copied to the host each step as the
engine API returns them), prefill tok/s for one 512-token prompt, and the bandwidth limit = measured
device copy bandwidth / weight bytes read per decoded token. Rows orcd-greedy-gpu and orcd-sampled-gpu
(T 0.8, top-k 40, top-p 0.95, min-p 0.05, a seed per row) pick tokens on the GPU and copy back only ids.
Rows orcd-generate (and orcd-generate-wait, with ORCD_DECODE_AHEAD=0) are the product's own loop,
`gpu.runner.generate_batch` with those parameters (orcd-generate-greedy: temperature 0, as llama.cpp's
row): stop checks and detokenising included, the next decode
step queued before a step's tokens are read (gpu/decode_ahead.py); tok/s from the first tokens to the last.
Writes JSON lines to --out and prints a markdown table last.

    python3 bench/gpu_bench.py --out $OUT/bench.jsonl [--models qwen-f16,qwen-q8,phi3-f16] [--no-peers]
        [--vocab-dir DIR]   # llama.cpp vocab test files: real qwen2 / phi-3 tokenizers in the GGUFs

Each engine runs on each model in its own process (log beside --out), so a crash loses one row only.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QWEN = dict(
    arch="qwen2",
    n_layers=24,
    dim=896,
    n_heads=14,
    n_kv_heads=2,
    hidden_dim=4864,
    vocab_size=151936,
    tied=True,
    rope_theta=1e6,
    norm_eps=1e-6,
    context_length=32768,
)
PHI3 = dict(
    arch="phi3",
    n_layers=32,
    dim=3072,
    n_heads=32,
    n_kv_heads=32,
    hidden_dim=8192,
    vocab_size=32064,
    rope_theta=10000.0,
    norm_eps=1e-5,
    context_length=4096,
)
MODELS = {"qwen-f16": (QWEN, "f16"), "qwen-q8": (QWEN, "q8_0"), "phi3-f16": (PHI3, "f16")}
BATCHES = (1, 8, 32, 64)
PROMPT, STEPS, PREFILL = 32, 64, 512

results: list[dict] = []


def record(out: Path, **row) -> None:
    results.append(row)
    print(json.dumps(row), flush=True)
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")


def record_decode(out: Path, engine: str, model: str, batch: int, dt: float, step_ms: bool = False) -> None:
    """One decode row: `batch` sequences × STEPS steps took `dt` seconds."""
    row = dict(section="decode", engine=engine, model=model, batch=batch, tok_s=round(batch * STEPS / dt, 1))
    if step_ms:
        row["step_ms"] = round(1e3 * dt / STEPS, 3)
    record(out, **row)


def copy_bandwidth(stream=None) -> float:
    """Device-to-device copy of 1 GiB, bytes read + written per second (median of 10): on `stream` in the
    current context (an engine's), else on the default stream of the device's primary context."""
    if stream is None:
        import pycuda.autoprimaryctx  # noqa: F401  (a context for this measurement only)
    import pycuda.driver as cuda

    n = 1 << 30
    a, b = cuda.mem_alloc(n), cuda.mem_alloc(n)
    cuda.memset_d32(a, 0x3C003C00, n // 4)
    start, end = cuda.Event(), cuda.Event()
    times = []
    for _ in range(12):
        start.record(stream)
        cuda.memcpy_dtod_async(b, a, n, stream)
        end.record(stream)
        end.synchronize()
        times.append(end.time_since(start) / 1e3)
    a.free(), b.free()
    return 2 * n / float(np.median(times[2:]))


def bench_engine(out: Path, name: str, path: Path, bandwidth: float) -> None:
    from gpu.cuda_engine import CudaEngine
    from gpu.params import SamplingParams

    eng = CudaEngine.load(path, max_batch=max(BATCHES), max_context=1024)
    rt = eng.rt
    w = eng.weights
    read_per_token = rt.allocated["weights"] - (0 if eng.config.tied_embeddings else w.token_embd.nbytes)
    record(
        out,
        section="engine-load",
        model=name,
        card=rt.name,
        load_s=round(eng.load_seconds, 2),
        weight_gib=round(rt.allocated["weights"] / 2**30, 3),
        bytes_per_param=round(rt.allocated["weights"] / w.n_params, 3),
        bandwidth_limit_tok_s=round(bandwidth / read_per_token, 1),
        memory=rt.memory_report(),
    )
    rng = np.random.default_rng(0)
    vocab = eng.config.vocab_size
    for batch in BATCHES:
        slots = [eng.alloc() for _ in range(batch)]
        logits = eng.prefill(slots, [rng.integers(0, vocab, PROMPT).tolist() for _ in slots])
        ids = logits.argmax(axis=1).tolist()
        for _ in range(3):  # first call of this batch size: eager + graph capture
            ids = eng.decode(slots, ids).argmax(axis=1).tolist()
        t0 = time.perf_counter()
        for _ in range(STEPS):  # the engine API: logits [B, vocab] to the host, argmax there
            ids = eng.decode(slots, ids).argmax(axis=1).tolist()
        dt = time.perf_counter() - t0
        record_decode(out, "orcd", name, batch, dt, step_ms=True)
        t0 = time.perf_counter()
        for _ in range(STEPS):  # greedy picked on the GPU: only token ids come back
            ids = eng.decode_greedy(slots, ids).tolist()
        dt = time.perf_counter() - t0
        record_decode(out, "orcd-greedy-gpu", name, batch, dt, step_ms=True)
        params = [SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, seed=i) for i in slots]
        histories = [[t] for t in ids]  # output so far (penalties are off at these parameters)
        ids = eng.decode_sample(slots, ids, params, [0] * batch, histories).tolist()  # warm-up (compile)
        t0 = time.perf_counter()
        for step in range(1, STEPS + 1):  # sampled on the GPU (sample.cu): only token ids come back
            ids = eng.decode_sample(slots, ids, params, [step] * batch, histories).tolist()
            for h, t in zip(histories, ids, strict=True):
                h.append(t)
        dt = time.perf_counter() - t0
        record_decode(out, "orcd-sampled-gpu", name, batch, dt, step_ms=True)
        for s in slots:
            eng.free(s)
        for label, ahead, temperature in (("orcd-generate", "1", 0.8), ("orcd-generate-wait", "0", 0.8),
                                          ("orcd-generate-greedy", "1", 0.0)):
            seconds = generate_seconds(eng, path, batch, ahead, temperature, rng)
            record_decode(out, label, name, batch, seconds, step_ms=True)
        if batch in (1, 64):
            profile_step(out, name, eng, batch)
    slot = eng.alloc()
    prompt = rng.integers(0, vocab, PREFILL).tolist()
    times = []
    for _ in range(4):
        eng.free(slot)
        slot = eng.alloc()
        t0 = time.perf_counter()
        eng.prefill([slot], [prompt])
        times.append(time.perf_counter() - t0)
    record(
        out,
        section="prefill",
        engine="orcd",
        model=name,
        tokens=PREFILL,
        tok_s=round(PREFILL / float(np.median(times[1:])), 1),
    )
    eng.close()
    variants = {"orcd-no-graphs": dict(use_graphs=False), "orcd-gemv-pipelined": dict(pipeline_max_m=8)}
    for label, opts in variants.items():  # what the CUDA graphs / the gemv's software pipeline buy at batch 1
        if name == "qwen-q8":
            continue
        from gpu.ops import gemv

        default = gemv.PIPELINE_MAX_M
        gemv.PIPELINE_MAX_M = opts.get("pipeline_max_m", default)
        eng = CudaEngine.load(path, max_batch=1, max_context=1024, use_graphs=opts.get("use_graphs", True))
        slot = eng.alloc()
        ids = eng.prefill([slot], [rng.integers(0, vocab, PROMPT).tolist()]).argmax(axis=1).tolist()
        for _ in range(3):
            ids = eng.decode_greedy([slot], ids).tolist()
        t0 = time.perf_counter()
        for _ in range(STEPS):
            ids = eng.decode_greedy([slot], ids).tolist()
        dt = time.perf_counter() - t0
        record_decode(out, label, name, 1, dt)
        eng.close()
        gemv.PIPELINE_MAX_M = default


def generate_seconds(eng, path: Path, batch: int, ahead: str, temperature: float, rng) -> float:
    """Seconds `generate_batch` takes for STEPS decode steps of `batch` requests (ORCD_DECODE_AHEAD set to
    `ahead`; greedy at temperature 0), from the last first token to the end."""
    import os

    from gpu.params import SamplingParams
    from gpu.runner import GenerationRequest, generate_batch
    from tokenizer import load_tokenizer

    os.environ["ORCD_DECODE_AHEAD"] = ahead
    tok = load_tokenizer(path)
    params = [SamplingParams(temperature=temperature, top_k=40, top_p=0.95, min_p=0.05, seed=i,
                             ignore_eos=True, max_tokens=STEPS + 1) for i in range(batch)]
    requests = [GenerationRequest(rng.integers(0, eng.config.vocab_size, PROMPT).tolist(), p) for p in params]
    n, t0 = 0, None
    for _ in generate_batch(eng, tok, requests):
        n += 1
        if n == batch:  # every first token is out (one prefill): decoding starts
            t0 = time.perf_counter()
    if n != batch * (STEPS + 1):
        raise RuntimeError(f"generate_batch gave {n} steps, not {batch * (STEPS + 1)}")
    os.environ.pop("ORCD_DECODE_AHEAD")
    return time.perf_counter() - t0


def profile_step(out: Path, name: str, eng, batch: int) -> None:
    """GPU time of one decode step: its CUDA graph replayed back to back, and each kernel timed alone."""
    import pycuda.driver as cuda
    from gpu_timing import decode_key

    rt = eng.rt
    with rt.activate():
        if eng.graphs is not None and batch in eng.graphs:
            key = decode_key(eng, batch)
            start, end = cuda.Event(), cuda.Event()
            start.record(rt.stream)
            for _ in range(50):
                eng.graphs.launch(key)
            end.record(rt.stream)
            end.synchronize()
            record(
                out,
                section="profile",
                model=name,
                batch=batch,
                graph_step_ms=round(end.time_since(start) / 50, 4),
            )
        rt.profile = []
        eng.forward.decode(batch)
        report = rt.profile_report()
        rt.profile = None
    total = sum(ms for _, ms in report.values())
    top = sorted(report.items(), key=lambda kv: -kv[1][1])[:12]
    record(
        out,
        section="profile",
        model=name,
        batch=batch,
        kernels_ms=round(total, 4),
        launches=sum(c for c, _ in report.values()),
        top=[(k, c, round(ms, 4)) for k, (c, ms) in top],
    )


LLAMA_VARIANTS = (  # load settings tried in turn (each in its own process) until one does not crash
    {},
    {"use_mmap": False, "verbose": False},
    {"n_gpu_layers": 0, "verbose": False},  # CPU only: tells whether the CUDA path is what crashes
)


def preload_libstdcxx() -> None:
    """Load the system libstdc++ with RTLD_GLOBAL before llama_cpp: the device's CUDA build carries
    its own static copy and crashed (SIGSEGV in print_info) when the two mixed (bench/llama_probe.py)."""
    import ctypes
    import ctypes.util

    ctypes.CDLL(ctypes.util.find_library("stdc++") or "libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)


def bench_llama_cpp(out: Path, name: str, path: Path, variant: int = 0) -> None:
    preload_libstdcxx()
    import llama_cpp
    from llama_cpp import Llama

    opts = dict(n_gpu_layers=-1, n_ctx=1024, n_batch=512, n_ubatch=512, verbose=True)
    opts.update(LLAMA_VARIANTS[variant])
    label = "llama.cpp" if opts["n_gpu_layers"] else "llama.cpp-cpu"
    llm = Llama(model_path=str(path), **opts)
    rng = np.random.default_rng(0)
    vocab = llm.n_vocab()

    def next_token(ctx=llm._ctx.ctx) -> int:  # greedy over the last position's logits (llm.scores
        # stays empty without logits_all, which would make every prefill copy all its logits)
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(vocab,))
        return int(np.argmax(logits))

    llm.reset()
    llm.eval(rng.integers(0, vocab, PROMPT).tolist())
    for _ in range(3):
        llm.eval([next_token()])
    t0 = time.perf_counter()
    for _ in range(STEPS):
        llm.eval([next_token()])
    dt = time.perf_counter() - t0
    record_decode(out, label, name, 1, dt)
    prompt = rng.integers(0, vocab, PREFILL).tolist()
    times = []
    for _ in range(4):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        times.append(time.perf_counter() - t0)
    record(
        out,
        section="prefill",
        engine=label,
        model=name,
        tokens=PREFILL,
        tok_s=round(PREFILL / float(np.median(times[1:])), 1),
    )
    del llm
    gc.collect()


def bench_hf(out: Path, name: str, spec: dict) -> None:
    import torch
    from transformers import AutoModelForCausalLM, Phi3Config, Qwen2Config

    if spec["arch"] == "qwen2":
        cfg = Qwen2Config(
            vocab_size=spec["vocab_size"],
            hidden_size=spec["dim"],
            intermediate_size=spec["hidden_dim"],
            num_hidden_layers=spec["n_layers"],
            num_attention_heads=spec["n_heads"],
            num_key_value_heads=spec["n_kv_heads"],
            tie_word_embeddings=True,
            rope_theta=spec["rope_theta"],
            max_position_embeddings=spec["context_length"],
        )
    else:
        cfg = Phi3Config(
            vocab_size=spec["vocab_size"],
            hidden_size=spec["dim"],
            intermediate_size=spec["hidden_dim"],
            num_hidden_layers=spec["n_layers"],
            num_attention_heads=spec["n_heads"],
            num_key_value_heads=spec["n_kv_heads"],
            max_position_embeddings=spec["context_length"],
            original_max_position_embeddings=spec["context_length"],
        )
    cfg._attn_implementation = "eager"
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="eager")
    model.eval()
    model.generation_config.eos_token_id = None
    torch.manual_seed(0)
    for batch in (1, 32):
        ids = torch.randint(0, spec["vocab_size"], (batch, PROMPT), device="cuda")
        kw = dict(max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False, pad_token_id=0)
        with torch.no_grad():
            model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.generate(ids, **kw)
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        record_decode(out, "hf-eager-bf16", name, batch, dt)
    ids = torch.randint(0, spec["vocab_size"], (1, PREFILL), device="cuda")
    with torch.no_grad():
        model(ids)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(ids)
        torch.cuda.synchronize()
    record(
        out,
        section="prefill",
        engine="hf-eager-bf16",
        model=name,
        tokens=PREFILL,
        tok_s=round(PREFILL / (time.perf_counter() - t0), 1),
    )
    del model
    gc.collect()
    torch.cuda.empty_cache()


def table() -> str:
    lines = [
        "| model | engine | " + " | ".join(f"decode b{b} tok/s" for b in BATCHES) + " | prefill 512 tok/s |",
        "|---|---|" + "---|" * (len(BATCHES) + 1),
    ]
    keys = sorted({(r["model"], r["engine"]) for r in results if "engine" in r and "model" in r})
    for model, engine in keys:
        rows = [r for r in results if r.get("model") == model and r.get("engine") == engine]
        dec = {r["batch"]: r["tok_s"] for r in rows if r["section"] == "decode"}
        pre = next((r["tok_s"] for r in rows if r["section"] == "prefill"), "")
        lines.append(
            f"| {model} | {engine} | " + " | ".join(str(dec.get(b, "")) for b in BATCHES) + f" | {pre} |"
        )
    return "\n".join(lines)


def write_model(workdir: Path, name: str, vocab_dir: Path | None) -> Path:
    """The model's random-weight GGUF (written once): the architecture's real llama.cpp vocab file when
    vocab_dir holds it (then the vocabulary size is that file's), else a byte-level vocab."""
    from gguf_loader.synthetic import BYTE_VOCAB, VOCAB_FILES, write_synthetic_model

    spec, dtype = MODELS[name]
    path = workdir / f"{name}.gguf"
    if not path.exists():
        t0 = time.perf_counter()
        kwargs = {k: v for k, v in spec.items() if k != "arch"}
        vocab = vocab_dir / VOCAB_FILES[spec["arch"]] if vocab_dir else None
        if vocab is not None and vocab.exists():
            kwargs.pop("vocab_size")
        else:
            vocab = BYTE_VOCAB
        write_synthetic_model(path, spec["arch"], vocab=vocab, dtype=dtype, **kwargs)
        print(f"[wrote {path} ({path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t0:.1f} s]")
    return path


def run_section(args, section: str, name: str, extra: list[str], tag: str = "") -> int | str:
    """One engine on one model in its own process: a crash or a CUDA error there loses only that row."""
    import subprocess

    log = args.out.parent / f"{section}-{name}{tag}.log"
    cmd = [
        sys.executable,
        __file__,
        "--section",
        section,
        "--models",
        name,
        "--out",
        str(args.out),
        "--workdir",
        str(args.workdir),
        *extra,
    ]
    t0 = time.perf_counter()
    with log.open("w") as f:
        try:
            rc = subprocess.run(
                cmd, stdout=f, stderr=subprocess.STDOUT, timeout=args.section_timeout
            ).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    print(f"[{section} {name}: rc {rc}, {time.perf_counter() - t0:.1f} s]", flush=True)
    if rc:
        record(
            args.out,
            section=section,
            model=name,
            error=f"exit code {rc}, see {log.name}: " + " | ".join(log.read_text().strip().splitlines()[-3:]),
        )
    return rc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench.jsonl"))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/orcd-bench"))
    parser.add_argument("--vocab-dir", type=Path, help="llama.cpp vocab test files (real tokenizers)")
    parser.add_argument("--no-peers", action="store_true", help="the CUDA engine only")
    parser.add_argument("--no-hf", action="store_true", help="llama.cpp as the only peer")
    parser.add_argument("--section", choices=("orcd", "llama.cpp", "hf"), help=argparse.SUPPRESS)
    parser.add_argument("--bandwidth", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--llama-variant", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--section-timeout", type=float, default=300.0)
    parser.add_argument(
        "--step-only",
        action="store_true",
        help="one eager batch-1 decode step of the first model (to run under ncu)",
    )
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    name = args.models.split(",")[0]
    if args.section == "orcd":
        return bench_engine(args.out, name, args.workdir / f"{name}.gguf", args.bandwidth)
    if args.section == "llama.cpp":
        return bench_llama_cpp(args.out, name, args.workdir / f"{name}.gguf", args.llama_variant)
    if args.section == "hf":
        return bench_hf(args.out, name, MODELS[name][0])
    if args.step_only:
        from gpu.cuda_engine import CudaEngine

        eng = CudaEngine.load(args.workdir / f"{name}.gguf", max_batch=1, max_context=1024, use_graphs=False)
        slot = eng.alloc()
        ids = eng.prefill([slot], [list(range(1, PROMPT + 1))]).argmax(axis=1).tolist()
        for _ in range(2):
            ids = eng.decode_greedy([slot], ids).tolist()
        eng.close()
        return
    bandwidth = copy_bandwidth()
    import pycuda.driver as cuda

    record(args.out, section="card", card=cuda.Device(0).name(), copy_gb_s=round(bandwidth / 1e9, 1))
    for name in args.models.split(","):
        write_model(args.workdir, name, args.vocab_dir)
        run_section(args, "orcd", name, ["--bandwidth", str(bandwidth)])
        if not args.no_peers:
            for variant in range(len(LLAMA_VARIANTS)):
                if (
                    run_section(args, "llama.cpp", name, ["--llama-variant", str(variant)], f"-v{variant}")
                    == 0
                ):
                    break
            if MODELS[name][1] == "f16" and not args.no_hf:
                run_section(args, "hf", name, [])
    results[:] = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    print(table())


if __name__ == "__main__":
    main()
