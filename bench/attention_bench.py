"""Prefill attention (on the device): the previous attention_prefill.cu against the current one, and PyTorch's
scaled_dot_product_attention as a reference point.

    python3 bench/attention_bench.py [--old-src FILE | --old-rev REV] [--dtype f16] [--out FILE.jsonl]

Shapes: Qwen2.5-0.5B (14 query heads, 2 KV heads, head_dim 64, 24 layers) and Phi-3-mini (32 / 32, 96, 32
layers); a 512-token chunk from start 0 (the first chunk of a prompt) and from start 512 (the second: 512
cached keys before it). A pass is one launch per layer, each layer with its own random KV cache and queries
(as in a forward pass, so the caches are not all in L2); GPU time of passes queued behind a spinning kernel
(the launchers' host time stays out), median of 7. The old kernel is compiled here from `git show
REV:gpu/kernels/attention_prefill.cu` (default: the CUDA-core version this bench was written against) or
--old-src, and launched as its launcher did (32 queries x 4 threads per block). Both outputs of layer 0 are
checked against each other and the numpy twin. SDPA runs in a subprocess (its own CUDA context): is_causal for
start 0, a boolean mask for start 512 (is_causal aligns the mask top-left), GQA through enable_gqa.
Prints the card name first and a table last.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OLD_REV = "be3f7e8"  # the CUDA-core attention_prefill (32 queries x 4 threads, 64-key tiles)
SHAPES = {"qwen2.5-0.5b": (14, 2, 64, 24), "phi3-mini": (32, 32, 96, 32)}  # heads, kv heads, head_dim, layers
N, STARTS, MAX_CTX = 512, (0, 512), 1024


def flops(n_heads: int, head_dim: int, n: int, start: int) -> float:
    keys = n * start + n * (n + 1) / 2  # causal: query i sees start + i + 1 keys
    return 4.0 * n_heads * head_dim * keys


def old_source(args) -> str:
    if args.old_src:
        return Path(args.old_src).read_text()
    spec = f"{args.old_rev}:gpu/kernels/attention_prefill.cu"
    return subprocess.run(["git", "-C", str(ROOT), "show", spec], capture_output=True, text=True,
                          check=True).stdout


def gpu_ms(rt, fn) -> float:
    """Median GPU time of one call of fn (a pass over the layers), queued behind a ~6 ms spin."""
    from gpu_timing import queued_ms  # (bench/ is on the path)

    return queued_ms(rt, lambda _: fn(), cycles=12_000_000, batches=7)


def bench_one(rt, old_fn, name, shape, start, k_host, v_host, q_host, kcs, vcs, qs, out, dtype):
    """Old and new kernel on one shape and start: layer 0 against the twin, then passes timed."""
    import pycuda.driver as cuda

    from gpu import reference as ref
    from gpu.ops.attention_prefill import attention_prefill
    from gpu.runtime import from_operand, ptr

    n_heads, n_kv, hd, layers = shape
    scale = float(1.0 / math.sqrt(hd))

    def new_layer(i):
        attention_prefill(rt, out, qs[i], kcs[i], vcs[i], 0, start)

    def old_layer(i):  # as the old launcher: grid (ceil(T / 32), heads), 128 threads
        rt.launch(old_fn, ((N + 31) // 32, n_heads, 1), (128, 1, 1), ptr(out), ptr(qs[i]), ptr(kcs[i]),
                  ptr(vcs[i]), 0, start, N, n_heads, n_kv, MAX_CTX, scale)

    def new_pass():
        for i in range(layers):
            new_layer(i)

    def old_pass():
        for i in range(layers):
            old_layer(i)

    end = start + N
    want = ref.attention_prefill(from_operand(q_host, dtype), from_operand(k_host[0, :, :end], dtype),
                                 from_operand(v_host[0, :, :end], dtype), start)
    errs = {}
    for label, layer in (("old", old_layer), ("new", new_layer)):
        cuda.memset_d16(out.gpudata, {"f16": 0x7E00, "bf16": 0x7FC0}[dtype], out.size)  # NaN
        layer(0)
        got = from_operand(out.get(), dtype).astype(np.float64)
        errs[label] = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    t_old = gpu_ms(rt, old_pass)
    t_new = gpu_ms(rt, new_pass)
    t_old2 = gpu_ms(rt, old_pass)  # the spread of a repeat
    t_new2 = gpu_ms(rt, new_pass)
    f = flops(n_heads, hd, N, start) * layers
    row = dict(shape=name, n=N, start=start, layers=layers, old_ms=t_old, old_ms_repeat=t_old2, new_ms=t_new,
               new_ms_repeat=t_new2, new_us_per_layer=1e3 * t_new / layers,
               new_tflops=f / (t_new * 1e-3) / 1e12, old_tflops=f / (t_old * 1e-3) / 1e12,
               err_old=errs["old"], err_new=errs["new"], card=rt.name, dtype=dtype)
    print(json.dumps(row), flush=True)
    return row


def run_kernels(args) -> list[dict]:
    from pycuda.compiler import SourceModule

    from gpu import kernel_cache
    from gpu.runtime import KERNEL_DIR, Runtime, to_operand

    rt = Runtime(0, args.dtype)
    print(f"card: {rt.name} ({rt.arch}, {rt.n_sm} SMs), operands {args.dtype}", flush=True)
    src = old_source(args)
    old_fns = {}
    rng = np.random.default_rng(0)
    rows = []
    for name, (n_heads, n_kv, hd, layers) in SHAPES.items():
        if hd not in old_fns:
            mod = SourceModule(src, options=kernel_cache.options({"HEAD_DIM": hd}, args.dtype), arch=rt.arch,
                               no_extern_c=True, include_dirs=[str(KERNEL_DIR)])
            fn = mod.get_function("attention_prefill")
            fn.prepare("PPPPiiiiiif")
            old_fns[hd] = (mod, fn)
        old_fn = old_fns[hd][1]
        shape = (1, n_kv, MAX_CTX, hd)
        k_host = to_operand(rng.standard_normal(shape).astype(np.float32), args.dtype)
        v_host = to_operand(rng.standard_normal(shape).astype(np.float32), args.dtype)
        q_host = to_operand(rng.standard_normal((N, n_heads, hd)).astype(np.float32), args.dtype)
        kcs, vcs, qs = [], [], []
        for layer in range(layers):  # distinct buffers (layer 0 random, the others rolled copies)
            kcs.append(rt.to_device(np.roll(k_host, layer, axis=2), "bench"))
            vcs.append(rt.to_device(np.roll(v_host, layer, axis=2), "bench"))
            qs.append(rt.to_device(np.roll(q_host, layer, axis=0), "bench"))
        out = rt.empty((N, n_heads * hd), rt.operand, "bench")

        for start in STARTS:
            rows.append(bench_one(rt, old_fn, name, SHAPES[name], start, k_host, v_host, q_host,
                                  kcs, vcs, qs, out, args.dtype))
        del kcs, vcs, qs, out
    rt.close()
    return rows


def run_torch(args) -> list[dict]:
    """SDPA timings (this process: torch alone)."""
    import torch
    import torch.nn.functional as F

    dt = torch.float16 if args.dtype == "f16" else torch.bfloat16
    dev = torch.device("cuda")
    rows = []
    for name, (n_heads, n_kv, hd, layers) in SHAPES.items():
        for start in STARTS:
            s = start + N
            qs = [torch.randn(1, n_heads, N, hd, device=dev, dtype=dt) for _ in range(layers)]
            ks = [torch.randn(1, n_kv, s, hd, device=dev, dtype=dt) for _ in range(layers)]
            vs = [torch.randn(1, n_kv, s, hd, device=dev, dtype=dt) for _ in range(layers)]
            mask = None
            if start:
                pos = torch.arange(N, device=dev)[:, None] + start
                mask = torch.arange(s, device=dev)[None, :] <= pos  # True: attend

            def one_pass(qs=qs, ks=ks, vs=vs, mask=mask, gqa=n_kv != n_heads):
                for q, k, v in zip(qs, ks, vs, strict=True):
                    F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                                   enable_gqa=gqa)

            try:
                one_pass()
                one_pass()
                torch.cuda.synchronize()
                times = []
                for _ in range(7):
                    torch.cuda._sleep(12_000_000)
                    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    a.record()
                    one_pass()
                    b.record()
                    b.synchronize()
                    times.append(a.elapsed_time(b))
                rows.append(dict(shape=name, start=start, torch_ms=float(np.median(times)),
                                 torch_card=torch.cuda.get_device_name(), torch=torch.__version__))
            except Exception as exc:  # one shape's backend may refuse (a mask with GQA, say)
                rows.append(dict(shape=name, start=start, torch_error=repr(exc)[:300]))
            del qs, ks, vs
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old-src", help="the old attention_prefill.cu (default: git show --old-rev)")
    parser.add_argument("--old-rev", default=OLD_REV)
    parser.add_argument("--dtype", default="f16", choices=("f16", "bf16"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-torch", action="store_true", help="skip the SDPA reference")
    parser.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_only:
        print(json.dumps(run_torch(args)))
        return
    rows = run_kernels(args)
    torch_ms = {}
    try:
        if args.no_torch:
            raise RuntimeError("--no-torch")
        proc = subprocess.run([sys.executable, __file__, "--torch-only", "--dtype", args.dtype],
                              capture_output=True, text=True, timeout=180)
        for r in json.loads(proc.stdout.strip().splitlines()[-1]):
            if "torch_ms" in r:
                torch_ms[(r["shape"], r["start"])] = r["torch_ms"]
            print(json.dumps(r), flush=True)
    except Exception as exc:  # torch is only a reference point
        print(f"SDPA reference failed: {exc!r} {getattr(locals().get('proc'), 'stderr', '')[-2000:]}")
    if args.out:
        with args.out.open("a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    print(f"\n{rows[0]['card']}, {args.dtype}, n = {N}; ms for the whole pass over the layers (repeat)")
    print("| shape | start | layers | old ms | new ms | speedup | new us/layer | new TFLOP/s | SDPA ms "
          "| err new |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        t = torch_ms.get((r["shape"], r["start"]))
        print(f"| {r['shape']} | {r['start']} | {r['layers']} | {r['old_ms']:.3f} ({r['old_ms_repeat']:.3f}) "
              f"| {r['new_ms']:.3f} ({r['new_ms_repeat']:.3f}) | {r['old_ms'] / r['new_ms']:.1f}x "
              f"| {r['new_us_per_layer']:.1f} | {r['new_tflops']:.0f} | {'n/a' if t is None else f'{t:.3f}'} "
              f"| {r['err_new']:.1e} (old {r['err_old']:.1e}) |")


if __name__ == "__main__":
    main()
