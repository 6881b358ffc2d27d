"""Decode and prefill throughput of the numpy engine on the real models.

    python bench/cpu_decode.py [--models smollm2-135m-instruct ...] [--threads N] [--tokens 64]

For each model: prefill tok/s for a 512-token prompt, then greedy decode tok/s (one sequence) after
a short prompt, overall and from the median step (less sensitive to other processes' bursts).
`--threads` sets OpenBLAS's thread count before numpy loads; on a busy machine 1 is often faster
than 2 (gemv threads wait on each other).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct-q4km")
TEXT = "The quick brown fox jumps over the lazy dog while the capital of France is Paris. "


def bench_model(name: str, n_tokens: int, prompt_len: int) -> None:
    import numpy as np

    from gguf_loader import assets
    from gpu.engine import load_engine
    from tokenizer import load_tokenizer

    path = assets.fetch(name)
    t0 = time.perf_counter()
    engine = load_engine(path, backend="numpy", max_batch=1, max_context=prompt_len + n_tokens + 8)
    load_s = time.perf_counter() - t0
    tok = load_tokenizer(path)
    long_prompt = (tok.encode(TEXT * (prompt_len // 8)) * 2)[:prompt_len]

    slot = engine.alloc()
    t0 = time.perf_counter()
    engine.prefill([slot], [long_prompt])
    prefill_s = time.perf_counter() - t0
    engine.free(slot)

    slot = engine.alloc()
    token = int(np.argmax(engine.prefill([slot], [tok.encode("The capital of France is")])[0]))
    engine.decode([slot], [token])  # warm-up step
    steps = []
    for _ in range(n_tokens):
        t0 = time.perf_counter()
        token = int(np.argmax(engine.decode([slot], [token])[0]))
        steps.append(time.perf_counter() - t0)
    print(
        f"{name}: load {load_s:.1f} s | prefill {prompt_len} tokens {prefill_s:.2f} s = "
        f"{prompt_len / prefill_s:.1f} tok/s | decode {n_tokens} tokens {sum(steps):.2f} s = "
        f"{n_tokens / sum(steps):.1f} tok/s (median step {1 / np.median(steps):.1f} tok/s)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--threads", type=int, default=None, help="OpenBLAS threads (default: its own)")
    parser.add_argument("--tokens", type=int, default=64, help="decode steps to time")
    parser.add_argument("--prompt-len", type=int, default=512)
    args = parser.parse_args()
    if args.threads is not None:
        os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)  # read when numpy loads OpenBLAS
    threads = os.environ.get("OPENBLAS_NUM_THREADS", f"default ({os.cpu_count()} cpus)")
    print(f"numpy engine, float32, OpenBLAS threads: {threads}, load average {os.getloadavg()[0]:.2f}")
    for name in args.models:
        bench_model(name, args.tokens, args.prompt_len)


if __name__ == "__main__":
    main()
