"""GGUF reader figures: open+index time of the Qwen file, and dequantisation MB/s per type vs gguf-py.

Usage: python bench/gguf_bench.py [--repeat N] [--synthetic-mb MB]

Types found in the two real models are timed on those tensors; the others on random blocks (with
finite float16 scales) of --synthetic-mb megabytes. MB/s counts quantised input bytes; each figure is
the best of --repeat runs, ours and gguf-py's (gguf==0.19.0, same bytes) interleaved; every result is
dropped before the next call. The first repeat also pays for faulting in the mapped file.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import gguf
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from gguf_loader import assets, quants  # noqa: E402
from gguf_loader.constants import BLOCK_SIZES, GGMLType  # noqa: E402
from gguf_loader.reader import open_gguf  # noqa: E402

MODELS = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct-q4km")
F16_FIELDS = {  # byte offsets of float16 scale fields within a block, kept finite in synthetic data
    GGMLType.Q4_0: (0,),
    GGMLType.Q4_1: (0, 2),
    GGMLType.Q5_0: (0,),
    GGMLType.Q5_1: (0, 2),
    GGMLType.Q8_0: (0,),
    GGMLType.Q2_K: (80, 82),
    GGMLType.Q3_K: (108,),
    GGMLType.Q4_K: (0, 2),
    GGMLType.Q5_K: (0, 2),
    GGMLType.Q6_K: (208,),
    GGMLType.F16: (0,),
}


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def time_type(gtype: GGMLType, arrays: list[np.ndarray], repeat: int) -> tuple[float, float]:
    """Best seconds for ours and gguf-py over `arrays`, the two runs interleaved to share noise."""
    block_elems, block_bytes = BLOCK_SIZES[gtype]
    jobs = [(a, a.size // block_bytes * block_elems) for a in arrays]
    ref_type = gguf.GGMLQuantizationType(int(gtype))

    def run_ours() -> None:
        for a, n in jobs:
            quants.dequantize(a, gtype, n)  # dropped at once: the allocator reuses the memory

    def run_theirs() -> None:
        for a, _ in jobs:
            gguf.quants.dequantize(a, ref_type)

    ours, theirs = [], []
    for _ in range(repeat):
        ours.append(best_of(1, run_ours))
        theirs.append(best_of(1, run_theirs))
    return min(ours), min(theirs)


def bench_open(repeat: int) -> None:
    path = assets.fetch("qwen2.5-coder-0.5b-instruct-q4km")

    def open_close():
        with open_gguf(path) as g:
            assert len(g.tensors) > 0

    seconds = best_of(repeat, open_close)
    start = time.perf_counter()
    gguf.GGUFReader(path)
    ref = time.perf_counter() - start
    size_mb = path.stat().st_size / 1e6
    print(f"open+index {path.name} ({size_mb:.0f} MB): {seconds * 1e3:.1f} ms (best of {repeat})")
    print(f"gguf-py GGUFReader on the same file: {ref * 1e3:.0f} ms")


def synthetic(gtype: GGMLType, megabytes: float, rng: np.random.Generator) -> np.ndarray:
    block_elems, block_bytes = BLOCK_SIZES[gtype]
    n_blocks = int(megabytes * 1e6) // block_bytes
    blocks = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)  # [n_blocks, block_bytes]
    for at in F16_FIELDS.get(gtype, ()):
        scales = rng.uniform(-1, 1, size=n_blocks).astype(np.float16)  # [n_blocks]
        blocks[:, at : at + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return blocks.reshape(-1)


def bench_dequant(repeat: int, synthetic_mb: float) -> None:
    work: dict[GGMLType, list[np.ndarray]] = defaultdict(list)
    source: dict[GGMLType, str] = {}
    files = [open_gguf(assets.fetch(name)) for name in MODELS]
    for g in files:
        for info in g.tensors.values():
            work[info.ggml_type].append(g.raw(info.name))
            source[info.ggml_type] = "real tensors"
    rng = np.random.default_rng(0)
    for gtype in quants.SUPPORTED_TYPES:
        if gtype not in work:
            work[gtype] = [synthetic(gtype, synthetic_mb, rng)]
            source[gtype] = "synthetic"
    print(f"{'type':<6} {'data':<13} {'MB':>7} {'ours MB/s':>10} {'gguf-py MB/s':>13} {'speed-up':>9}")
    for gtype in quants.SUPPORTED_TYPES:
        ours, theirs = time_type(gtype, work[gtype], repeat)
        mb = sum(a.size for a in work[gtype]) / 1e6
        print(
            f"{gtype.name:<6} {source[gtype]:<13} {mb:>7.1f} {mb / ours:>10.0f} {mb / theirs:>13.0f} "
            f"{theirs / ours:>8.2f}x"
        )
    for g in files:
        g.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--synthetic-mb", type=float, default=16.0)
    args = parser.parse_args()
    bench_open(args.repeat)
    bench_dequant(args.repeat, args.synthetic_mb)


if __name__ == "__main__":
    main()
