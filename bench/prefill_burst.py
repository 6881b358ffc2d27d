"""Admitting a burst of short prompts on the device: the time from `prefill` call to first tokens for
64 chat-sized prompts (20-40 tokens) on a random-weight GGUF of Qwen2.5-0.5B shape (F16, the real qwen2
vocabulary when --vocab-dir holds it), three ways: one prompt per call (how a trickle of arrivals is
admitted), all 64 in one call (packed passes, logits to the host), and all 64 through `prefill_mixed`
(packed, first tokens sampled on the GPU). Plus one 512-token prompt (tok/s). Prints the card name.

    python3 bench/prefill_burst.py --workdir /tmp/orcd-bench [--vocab-dir .device/vocab] [--jobs 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def timed(fn, repeats: int = 5) -> float:
    """Median seconds of fn() after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gpu_seconds(engine, fn) -> float:
    """GPU time of fn()'s work on the engine's stream (median of 5): the stream is held by a 50 ms spin
    kernel while fn() queues its launches, so host launch time does not count (fn must end in a sync)."""
    import pycuda.driver as cuda
    from gpu_timing import queued_ms

    with engine.rt.activate():
        cycles = cuda.Context.get_device().get_attribute(cuda.device_attribute.CLOCK_RATE) * 50  # kHz x ms
    return queued_ms(engine.rt, lambda _: fn(), cycles=cycles, batches=5, warm_up=0) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/orcd-bench"))
    parser.add_argument("--vocab-dir", type=Path, default=None)
    parser.add_argument("--jobs", type=int, default=64)
    args = parser.parse_args()

    from gpu_bench import write_model

    from gpu.cuda_engine import CudaEngine
    from gpu.params import SamplingParams

    args.workdir.mkdir(parents=True, exist_ok=True)
    path = write_model(args.workdir, "qwen-f16", args.vocab_dir)
    engine = CudaEngine.load(path, max_batch=args.jobs, max_context=1024)
    engine.warm_up()
    rng = np.random.default_rng(0)
    vocab = engine.config.vocab_size
    prompts = [rng.integers(0, vocab, int(n)).tolist() for n in rng.integers(20, 41, args.jobs)]
    params = [SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, seed=i)
              for i in range(args.jobs)]

    def burst(call) -> None:
        slots = [engine.alloc() for _ in prompts]
        try:
            call(slots)
        finally:
            for slot in slots:
                engine.free(slot)

    alone = lambda s: [engine.prefill([x], [p]) for x, p in zip(s, prompts, strict=True)]  # noqa: E731
    one_by_one = timed(lambda: burst(alone))
    packed = timed(lambda: burst(lambda s: engine.prefill(s, prompts)))
    mixed = timed(lambda: burst(lambda s: engine.prefill_mixed(s, prompts, params, [0] * len(s), prompts)))
    long_prompt = rng.integers(0, vocab, 512).tolist()
    t512 = timed(lambda: burst(lambda s: engine.prefill(s[:1], [long_prompt])))
    gpu512 = gpu_seconds(engine, lambda: burst(lambda s: engine.prefill(s[:1], [long_prompt])))
    n_tokens = sum(map(len, prompts))
    print(f"card: {engine.rt.name}; {args.jobs} prompts, {n_tokens} tokens")
    per_prompt = one_by_one * 1e3 / args.jobs
    print(f"one prompt per call:          {one_by_one * 1e3:8.2f} ms ({per_prompt:.2f} ms/prompt)")
    print(f"one call, packed, logits:     {packed * 1e3:8.2f} ms ({n_tokens / packed:,.0f} tok/s)")
    print(f"one call, packed, GPU-picked: {mixed * 1e3:8.2f} ms ({n_tokens / mixed:,.0f} tok/s)")
    print(f"one 512-token prompt:         {t512 * 1e3:8.2f} ms ({512 / t512:,.0f} tok/s), "
          f"{gpu512 * 1e3:.2f} ms of it on the GPU (the rest: host launches)")
    engine.close()


if __name__ == "__main__":
    main()
