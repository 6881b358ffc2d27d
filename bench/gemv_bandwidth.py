"""Bandwidth of gemv.cu alone on the projections of the Qwen2.5-0.5B and Phi-3-mini shapes, next to the
device-to-device copy: is a decode step's gemv streaming its weights at the card's rate? Each shape's
launches cycle over enough weight copies that none is read from L2, captured as one CUDA graph with
programmatic launch (as in the decode graphs) and replayed; µs per launch and GB/s of weights. Variants
of the kernel's -D LOAD (weight load instruction), UNROLL (64-wide k chunks in flight per warp) and WQ8 (Q8_0
weights: 1.0625 bytes a weight) and of the launch's K split (warps per group of 8 weight rows) side by side.

    python3 bench/gemv_bandwidth.py --out $OUT/gemv_bw.jsonl [--variants 2:0,0:0,2:16,2:0:q8]
        [--ksplits 0,2,8] [--rows 1,8]   # UNROLL 0: the kernel's default; K split 0: the launcher's
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

# name -> (N, K, swiglu epilogue)
SHAPES = {
    "qwen.qkv": (1152, 896, False), "qwen.o": (896, 896, False), "qwen.gate_up": (9728, 896, True),
    "qwen.down": (896, 4864, False), "qwen.head": (151936, 896, False),
    "phi3.qkv": (9216, 3072, False), "phi3.o": (3072, 3072, False), "phi3.gate_up": (16384, 3072, True),
    "phi3.down": (3072, 8192, False), "phi3.head": (32064, 3072, False),
}
MIN_BYTES = 512 << 20  # weights cycled per shape: well past the 50-60 MB L2


def copy_gbps(rt, nbytes: int = 1 << 30) -> float:
    """Device-to-device copy rate, read + written bytes per second (GB/s)."""
    import pycuda.driver as cuda

    src, dst = rt.empty(nbytes, np.uint8, "bench"), rt.empty(nbytes, np.uint8, "bench")
    start, end = cuda.Event(), cuda.Event()
    times = []
    for _ in range(5):
        start.record(rt.stream)
        cuda.memcpy_dtod_async(dst.gpudata, src.gpudata, nbytes, rt.stream)
        end.record(rt.stream)
        end.synchronize()
        times.append(end.time_since(start))
    return 2 * nbytes / (min(times[1:]) * 1e-3) / 1e9


def time_shape(rt, graphs, name: str, rows: int, load: int, unroll: int, q8: bool, ksplit: int) -> dict:
    import pycuda.driver as cuda
    from gpu_timing import graph_ms

    from gpu.ops import blocks
    from gpu.ops.gemv import ROW_BUCKETS, ksplit_for

    n, k, swiglu = SHAPES[name]
    nbytes = n * k * 34 // 32 if q8 else n * k * 2
    copies = max(2, -(-MIN_BYTES // nbytes))
    weights = [rt.empty((nbytes,), np.uint8, "bench") for _ in range(copies)]
    for w in weights:  # f16 0.1 (Q8: quants 0x66, scales after them 0x2E66): values do not change the time
        cuda.memset_d16(w.gpudata, 0x2E66, nbytes // 2)
    x = rt.empty((rows, k), np.float16, "bench")
    cuda.memset_d16(x.gpudata, 0x2E66, rows * k)
    y = rt.empty((rows, n // 2) if swiglu else (rows, n), np.float16 if swiglu else np.float32, "bench")
    max_m = next(b for b in ROW_BUCKETS if b >= rows)
    defines = {"MAX_M": max_m, "EPI_SWIGLU": int(swiglu), "EPI_ROPE": 0, "PIPE": 0, "LOAD": load}
    if unroll:
        defines["UNROLL"] = unroll
    if q8:
        defines["WQ8"] = 1
    fn = rt.kernel("gemv", "PPPPPiiiiiPPPPPPiiiiffi", **defines)
    ksplit = ksplit or ksplit_for(rt, n, k)
    shared = ksplit * blocks(max_m, 16) * 4 * 32 * 4 if ksplit > 1 else 0
    zeros = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, np.float32(0), np.float32(0), 0)

    def enqueue():
        for w in weights:
            scales = int(w.gpudata) + n * k if q8 else 0
            rt.launch(fn, (blocks(n, 8), 1, 1), (32 * ksplit, 1, 1), int(y.gpudata), int(x.gpudata),
                      int(w.gpudata), scales, 0, rows, n, k, ksplit, 0, *zeros, shared=shared)

    ms = graph_ms(rt, graphs, (name, rows, load, unroll, q8, ksplit), enqueue, replays=6, skip=1)
    weights.clear()  # freed: the graph is not launched again
    us = ms / copies * 1e3
    return {"shape": name, "rows": rows, "load": load, "unroll": unroll or "default", "q8": q8,
            "ksplit": ksplit, "mb": round(nbytes / 1e6, 2), "us": round(us, 2),
            "gbps": round(nbytes / us / 1e3, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default="2:0,0:0",
                        help="LOAD:UNROLL[:q8] (UNROLL 0: the kernel's default; q8: Q8_0 weights)")
    parser.add_argument("--ksplits", default="0", help="K splits to try (0: the launcher's)")
    parser.add_argument("--rows", default="1,8")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    args = parser.parse_args()

    from gpu_timing import emit

    from gpu.cuda_graphs import DecodeGraphs
    from gpu.runtime import Runtime

    rt = Runtime(0, "f16")
    graphs = DecodeGraphs(rt.stream.handle)
    copy = copy_gbps(rt)
    head = {"device": rt.name, "copy_gbps": round(copy, 1)}
    emit(args.out, head)
    parts = [p.split(":") for p in args.variants.split(",")]
    variants = [(int(v[0]), int(v[1]), v[2:] == ["q8"]) for v in parts]
    for name in args.shapes.split(","):
        for rows in (int(r) for r in args.rows.split(",")):
            for (load, unroll, q8), ksplit in itertools.product(variants, map(int, args.ksplits.split(","))):
                row = time_shape(rt, graphs, name, rows, load, unroll, q8, ksplit)
                row["of_copy"] = round(row["gbps"] / copy, 3)
                emit(args.out, row)
    graphs.close()
    rt.close()


if __name__ == "__main__":
    main()
