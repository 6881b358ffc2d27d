"""Tensor-core gemm benchmark (run on the device): each prefill projection shape alone (M = 512 rows) in
TFLOP/s, ours next to torch.matmul (cuBLAS, f16 in and out, in its own process), and the end-to-end prefill
of one 512-token prompt on a random-weight Qwen2.5-0.5B-shape F16 GGUF, with the share of its kernel time
spent in gemm.

    python3 bench/gemm_bench.py [--vocab-dir DIR] [--baseline OLD_gemm.cu] [--sweep] [--json OUT.json]

--baseline: an earlier gemm.cu (kernel `gemm(y, a, w, bias, M, N, K, accumulate)`, static shared memory,
its launcher's tile choice) timed beside the current one, per shape and end to end, in the same run.
--sweep: every tile config x K split per shape (the data behind gpu/ops/gemm.py's selection); the end-to-end
run then also uses the best pair per shape ("tuned").
The end-to-end part loads the engine, which imports the worker's dependencies (pydantic, ...): on the GPU
machine install the wheels that bench/stage_device.sh puts in .whl first. Variants: new (gpu/ops/gemm.py as
is), old (--baseline), tuned (--sweep's best pair per shape).
Each figure is the median over 7 batches of 20 launches that rotate over copies of the weights (so they come
from device memory, as in the model, not from L2), queued behind a spin kernel so that only GPU time counts;
torch.matmul's batches are CUDA graphs. Prints the card name first, a table last.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

M = 512
REPS, REPLAYS = 20, 7
# (model, projection, N, K, bias, accumulate) as the forward pass calls them
SHAPES = [
    ("qwen0.5b", "qkv", 1152, 896, True, False),
    ("qwen0.5b", "o", 896, 896, False, True),
    ("qwen0.5b", "gate_up", 9728, 896, False, False),
    ("qwen0.5b", "down", 896, 4864, False, True),
    ("phi3-mini", "qkv", 9216, 3072, False, False),
    ("phi3-mini", "o", 3072, 3072, False, True),
    ("phi3-mini", "gate_up", 16384, 3072, False, False),
    ("phi3-mini", "down", 3072, 8192, False, True),
]
SPLITS = (1, 2, 3, 4, 6)


def n_copies(wbytes: int) -> int:
    return max(2, min(8, math.ceil(150e6 / wbytes)))


def tflops(n: int, k: int, ms: float) -> float:
    return round(2 * M * n * k / (ms * 1e-3) / 1e12, 1)


def cell(n: int, k: int, ms: float | None) -> str:
    return f"{tflops(n, k, ms)} ({ms * 1e3:.1f} us)" if ms else ""


# --- torch (its own process: its context must not meet the Runtime's) ---------------------------------
def torch_times() -> dict:
    import torch

    out = {"card": torch.cuda.get_device_name(0)}
    for model, proj, n, k, _, _ in SHAPES:
        a = torch.randn(M, k, device="cuda", dtype=torch.float16)
        w0 = (torch.randn(n, k, device="cuda") / math.sqrt(k)).half()
        ws = [w0.clone() for _ in range(n_copies(w0.numel() * 2))]
        o = torch.empty(M, n, device="cuda", dtype=torch.float16)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for w in ws:
                torch.mm(a, w.t(), out=o)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for r in range(REPS):
                torch.mm(a, ws[r % len(ws)].t(), out=o)
        g.replay()
        times = []
        for _ in range(REPLAYS):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            g.replay()
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e) / REPS)
        out[f"{model}/{proj}"] = float(np.median(times))
    return out


# --- ours ------------------------------------------------------------------------------------------
class OldGemm:
    """The --baseline kernel and its launcher's tile choice (BM, BN, WM, WN by M, N and the SM count)."""

    def __init__(self, rt, source: Path):
        self.rt, self.source, self.fns = rt, source.read_text(), {}

    def tiles(self, m, n):
        from gpu.ops import blocks

        if blocks(m, 128) * blocks(n, 128) >= self.rt.n_sm:
            return 128, 128, 2, 4
        return (32, 64, 2, 2) if m <= 32 else (64, 64, 2, 2)

    def __call__(self, rt, y, a, w, bias=None, accumulate=False):
        from pycuda.compiler import SourceModule

        from gpu import kernel_cache
        from gpu.ops import blocks
        from gpu.runtime import ptr

        m, k = a.shape
        n = w.shape[0]
        bm, bn, wm, wn = self.tiles(m, n)
        fn = self.fns.get((bm, bn))
        if fn is None:
            defines = {"BM": bm, "BN": bn, "WM": wm, "WN": wn}
            mod = SourceModule(self.source, options=kernel_cache.options(defines, rt.dtype), arch=rt.arch,
                               no_extern_c=True, include_dirs=[str(kernel_cache.KERNEL_DIR)])
            fn = self.fns[(bm, bn)] = mod.get_function("gemm")
            fn.prepare("PPPPiiii")
            rt._names[id(fn)] = "gemm(old)"
        rt.launch(fn, (blocks(n, bn), blocks(m, bm), 1), (32 * wm * wn, 1, 1), ptr(y), ptr(a), ptr(w),
                  ptr(bias), m, n, k, int(accumulate))


def queued_ms(rt, enqueue) -> float:
    """Median ms per launch over REPLAYS batches of REPS launches (enqueue(r)), each batch queued behind a
    ~5 ms spin kernel so that the events time the GPU alone, not the host's launch cost."""
    from bench.gpu_timing import queued_ms as gpu_queued_ms

    return gpu_queued_ms(rt, enqueue, cycles=10_000_000, batches=REPLAYS, per_batch=REPS)


def shape_bench(rt, args, old, rows: list, tuned: dict) -> None:
    rng = np.random.default_rng(0)
    for spec in SHAPES:
        rows.append(one_shape(rt, args, old, spec, rng, tuned))
        print(json.dumps(rows[-1]), flush=True)


def one_shape(rt, args, old, spec, rng, tuned: dict) -> dict:
    import pycuda.driver as cuda

    from gpu.ops import gemm as G
    from gpu.runtime import to_operand

    model, proj, n, k, has_bias, acc = spec
    a_host = rng.standard_normal((M, k), dtype=np.float32)
    w_host = rng.standard_normal((n, k), dtype=np.float32) / np.float32(math.sqrt(k))
    a = rt.to_device(to_operand(a_host, "f16"), "bench")
    w0 = rt.to_device(to_operand(w_host, "f16"), "bench")
    ws = [w0]
    for _ in range(n_copies(w0.nbytes) - 1):
        ws.append(rt.empty(w0.shape, w0.dtype, "bench"))
        cuda.memcpy_dtod(ws[-1].gpudata, w0.gpudata, w0.nbytes)
    bias = rt.to_device(rng.standard_normal(n, dtype=np.float32), "bench") if has_bias else None
    y = rt.empty((M, n), np.float32, "bench")
    want = a_host.astype(np.float16).astype(np.float32) @ w_host.astype(np.float16).astype(np.float32).T
    if bias is not None:
        want += bias.get()

    def check(fn, label):
        cuda.memset_d32(y.gpudata, 0, y.size)
        fn(rt, y, a, w0, bias, False)
        got = y.get()
        err = float(np.linalg.norm(got - want) / np.linalg.norm(want))
        if err > 1e-4:
            print(f"!! {model}/{proj} {label}: rel err {err:.2e}")
        return got

    key = f"{model}/{proj}"
    row = {"shape": key, "N": n, "K": k, "splits": G.splits_for(rt, n, k),
           "config": G.config_for(rt, M, n, k, G.splits_for(rt, n, k)).name}
    new_out = check(G.gemm, "new")
    row["new_ms"] = queued_ms(rt, lambda r: G.gemm(rt, y, a, ws[r % len(ws)], bias, acc))
    if old is not None:
        old_out = check(old, "old")
        row["old_ms"] = queued_ms(rt, lambda r: old(rt, y, a, ws[r % len(ws)], bias, acc))
        row["bits_equal_old"] = bool(np.array_equal(old_out, new_out))
    if args.sweep:
        best = None
        for cfg in G.CONFIGS.values():
            for s in SPLITS:
                k_len, used = G.split_k(k, s)
                if used != s or (s > 1 and k_len < 384) or cfg.bm < 64:
                    continue
                launch = lambda rt_, y_, a_, w_, b_, acc_, cfg=cfg, s=s: G.launch(  # noqa: E731
                    rt_, y_, a_, w_, b_, acc_, cfg, s)
                check(launch, f"{cfg.name} split {s}")
                ms = queued_ms(rt, lambda r, launch=launch: launch(rt, y, a, ws[r % len(ws)], bias, acc))
                print(f"  {key:18s} {cfg.name:14s} split {s}: {ms * 1e3:8.1f} us "
                      f"{tflops(n, k, ms):6.1f} TF/s", flush=True)
                if best is None or ms < best[0]:
                    best = (ms, cfg.name, s)
        row["best_ms"], row["best_config"], row["best_splits"] = best
        tuned[(n, k)] = (best[1], best[2])
    for arr in (a, *ws, y):
        arr.gpudata.free()
    return row


# --- end to end ------------------------------------------------------------------------------------
def e2e(args, baseline, tuned: dict, out: dict) -> None:
    import gpu.ops.gemm as G
    from bench.gpu_bench import write_model
    from bench.gpu_timing import spin
    from gpu.cuda_engine import CudaEngine

    path = write_model(args.workdir, "qwen-f16", args.vocab_dir)
    eng = CudaEngine.load(path, max_batch=1, max_context=1024)
    rt = eng.rt
    rng = np.random.default_rng(1)
    prompt = rng.integers(0, eng.config.vocab_size, M).tolist()
    users = [m for m in (sys.modules.get("gpu.ops.linear"), sys.modules.get("gpu.cuda_forward"))
             if m is not None and hasattr(m, "gemm")]
    old = OldGemm(rt, baseline) if baseline else None

    def tuned_gemm(rt_, y, a, w, bias=None, accumulate=False):
        pick = tuned.get((w.shape[0], w.shape[1]))
        if pick is None:
            return G.gemm(rt_, y, a, w, bias, accumulate)
        return G.launch(rt_, y, a, w, bias, accumulate, G.CONFIGS[pick[0]], pick[1])

    def use(variant):
        gemm_fn = {"old": old, "tuned": tuned_gemm}.get(variant, G.gemm)
        for mod in users:
            mod.gemm = gemm_fn

    variants = ["new"] + (["old"] if old is not None else []) + (["tuned"] if tuned else [])
    for variant in variants:
        use(variant)
        slot = eng.alloc()
        times = []
        for _ in range(6):
            eng.free(slot)
            slot = eng.alloc()
            t0 = time.perf_counter()
            eng.prefill([slot], [prompt])
            times.append(time.perf_counter() - t0)
        logits = eng.prefill([slot], [prompt])
        wall = float(np.median(times[1:]))
        # kernel time by kernel, with the launches queued behind a spin kernel (no host gaps in the events)
        with rt.activate():
            eng.free(slot)
            slot = eng.alloc()
            spin(rt, 100_000_000)  # ~50 ms: the prefill's launches queue up behind it
            rt.profile = []
            eng.prefill([slot], [prompt])
            report = rt.profile_report()
            rt.profile = None
        eng.free(slot)
        total = sum(ms for _, ms in report.values())
        gemm_ms = sum(ms for name, (_, ms) in report.items() if name.startswith("gemm"))
        by_kernel = {}
        for name, (count, ms) in report.items():
            base = name.split(" ")[0]
            c0, m0 = by_kernel.get(base, (0, 0.0))
            by_kernel[base] = (c0 + count, m0 + ms)
        out[variant] = {"tok_s": round(M / wall, 1), "wall_ms": round(wall * 1e3, 3),
                        "kernels_ms": round(total, 3), "gemm_ms": round(gemm_ms, 3),
                        "gemm_share": round(gemm_ms / total, 3) if total else None,
                        "by_kernel": {k: (c, round(ms, 3)) for k, (c, ms) in
                                      sorted(by_kernel.items(), key=lambda kv: -kv[1][1])},
                        "top1": int(np.asarray(logits).reshape(-1).argmax())}
        print(json.dumps({"e2e": variant, **out[variant]}), flush=True)
    use("new")
    eng.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-dir", type=Path, help="llama.cpp vocab test files (real tokenizer)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/orcd-bench"))
    parser.add_argument("--baseline", type=Path, help="an earlier gemm.cu to time beside the current one")
    parser.add_argument("--sweep", action="store_true", help="every config x split per shape")
    parser.add_argument("--no-e2e", action="store_true")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_only:
        print(json.dumps(torch_times()))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run([sys.executable, __file__, "--torch-only"], capture_output=True, text=True,
                              timeout=240)
        torch_ms = json.loads(proc.stdout.strip().splitlines()[-1])
    except Exception as exc:
        print(f"[torch failed: {exc}] {proc.stderr[-2000:] if 'proc' in locals() else ''}")
        torch_ms = {}
    from gpu.runtime import Runtime

    rt = Runtime(0, "f16")
    print(f"card: {rt.name} ({rt.n_sm} SMs); torch: {torch_ms.get('card')}", flush=True)
    old = OldGemm(rt, args.baseline) if args.baseline else None
    rows, tuned, e2e_out = [], {}, {}
    shape_bench(rt, args, old, rows, tuned)
    rt.close()
    if not args.no_e2e:
        try:
            e2e(args, args.baseline, tuned, e2e_out)
        except Exception as exc:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            print(f"[e2e failed: {exc}]")
    if args.json:
        args.json.write_text(json.dumps({"card": rt.name, "shapes": rows, "torch_ms": torch_ms,
                                         "tuned": {f"{n}x{k}": v for (n, k), v in tuned.items()},
                                         "e2e": e2e_out}, indent=1))
    print(f"\ncard: {rt.name}, M = {M}, f16, TFLOP/s (us)")
    head = "| shape | N | K | ours old | ours new (config, splits) | sweep best | torch.matmul |"
    print(head + "\n|" + "---|" * 7)
    for r in rows:
        n, k = r["N"], r["K"]
        best = f"{cell(n, k, r['best_ms'])} {r['best_config']} s{r['best_splits']}" if "best_ms" in r else ""
        print(f"| {r['shape']} | {n} | {k} | {cell(n, k, r.get('old_ms'))} | {cell(n, k, r['new_ms'])} "
              f"{r['config']} s{r['splits']} | {best} | {cell(n, k, torch_ms.get(r['shape']))} |")
    for variant, v in e2e_out.items():
        print(f"e2e prefill 512 qwen-f16 [{variant}]: {v['tok_s']} tok/s, wall {v['wall_ms']} ms, kernels "
              f"{v['kernels_ms']} ms, gemm {v['gemm_ms']} ms ({v['gemm_share']})")


if __name__ == "__main__":
    main()
