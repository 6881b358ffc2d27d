"""Decode attention alone (attention_decode.cu, one new query per sequence): how its time grows with the
context. A pass is one launch per layer of the Qwen2.5-0.5B shape (14 query heads, 2 KV heads, head_dim 64,
24 layers), captured as one CUDA graph with programmatic launch as in the decode graphs, each layer with
its own KV cache. "hot": the launches back to back (the caches' rows stay in L2); "cold": a 64 MB
device-to-device copy before each launch evicts them, as a decode step's weights stream through L2 between
two layers' attention, and the time of the copies alone is subtracted. One-pass (`direct`) and two-pass
forms; µs per layer.

    python3 bench/attention_decode_bench.py --out $OUT/attn.jsonl [--rows 1,8] [--lengths 32,96,256,511]
        [--label new] [--src DIR]   # gpu/ from another checkout: an A/B on the same card
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

N_HEADS, N_KV, HEAD_DIM, LAYERS, MAX_CTX = 14, 2, 64, 24, 1024


FLUSH = 64 << 20


def time_pass(rt, graphs, flush, rows: int, length: int, direct: bool, hot: bool) -> float:
    import pycuda.driver as cuda
    from gpu_timing import graph_ms

    from gpu.ops.attention_decode import DIRECT_CTX, attention_decode, n_splits

    n_slots = rows + 1
    caches = []
    for _ in range(LAYERS):
        kv = [rt.empty((n_slots, N_KV, MAX_CTX, HEAD_DIM), np.float16, "bench") for _ in range(2)]
        for c in kv:
            cuda.memset_d16(c.gpudata, 0x2E66, c.size)
        caches.append(kv)
    q = rt.to_device(np.full((rows, N_HEADS, HEAD_DIM), 0.1, np.float16), "bench")
    out = rt.empty((rows, N_HEADS * HEAD_DIM), np.float16, "bench")
    slots = rt.to_device(np.arange(rows, dtype=np.int32), "bench")
    pos = rt.to_device(np.full(rows, length - 1, np.int32), "bench")
    splits = n_splits(MAX_CTX)
    part_out = rt.empty((rows, N_HEADS, splits, HEAD_DIM), np.float32, "bench")
    part_ml = rt.empty((rows, N_HEADS, splits, 2), np.float32, "bench")

    def enqueue(attention=True, evict=not hot):
        for k, v in caches:
            if evict:
                cuda.memcpy_dtod_async(flush[1].gpudata, flush[0].gpudata, FLUSH, rt.stream)
            if attention:
                attention_decode(rt, out, q, k, v, slots, pos, part_out, part_ml,
                                 direct_ctx=DIRECT_CTX if direct else 0)

    ms = graph_ms(rt, graphs, ("attn", rows, length, direct, hot), enqueue)
    if not hot:
        ms -= graph_ms(rt, graphs, ("flush", rows, length, direct), lambda: enqueue(attention=False))
    return ms * 1e3 / LAYERS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", default="1,8")
    parser.add_argument("--lengths", default="32,96,256,511")
    parser.add_argument("--label", default="this")
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    sys.path[:0] = [str(args.src.resolve()), str(Path(__file__).resolve().parent)]

    from gpu_timing import emit

    from gpu.cuda_graphs import DecodeGraphs
    from gpu.runtime import Runtime

    rt = Runtime(0, "f16")
    graphs = DecodeGraphs(rt.stream.handle)
    flush = [rt.empty(FLUSH, np.uint8, "bench") for _ in range(2)]
    print(json.dumps({"device": rt.name}), flush=True)
    for rows in (int(r) for r in args.rows.split(",")):
        for length in (int(n) for n in args.lengths.split(",")):
            row = {"label": args.label, "rows": rows, "length": length}
            for direct in (True, False):
                for hot in (False, True):
                    name = f"{'one' if direct else 'two'}-pass {'hot' if hot else 'cold'}"
                    row[name] = round(time_pass(rt, graphs, flush, rows, length, direct, hot), 2)
            emit(args.out, row)
    graphs.close()
    rt.close()


if __name__ == "__main__":
    main()
