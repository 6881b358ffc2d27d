"""Decode-step latency on the device: random-weight Qwen2.5-0.5B-shape and Phi-3-mini-shape F16 models
(qwen-q8: the Qwen shape in Q8_0; gguf_loader.synthetic, byte vocab of the real size), the GPU time of one
replayed CUDA-graph step and greedy tok/s (argmax on the GPU) at batch 1/8/32/64 after 32-token prompts,
and the kernels of one eager step at batch 1 and 64 (the runtime's per-launch event profile: each time
includes several µs of launch and event overhead, so compare them only with each other). JSON lines to
--out, a table last.

    python3 bench/decode_latency.py --out $OUT/latency.jsonl [--models qwen,phi3,qwen-q8] [--batches 1,8]
        [--label new] [--src DIR]   # gpu/ from another checkout first: an A/B on the same card and files
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
BATCHES = (1, 8, 32, 64)
PROMPT, STEPS, REPLAYS = 32, 32, 50


def write_model(workdir: Path, name: str) -> Path:
    from gpu_bench import PHI3, QWEN  # (bench/ is on the path)

    from gguf_loader.synthetic import BYTE_VOCAB, write_synthetic_model

    spec = {"qwen": QWEN, "phi3": PHI3, "qwen-q8": QWEN}[name]
    dtype = "q8_0" if name.endswith("-q8") else "f16"
    path = workdir / f"{name}-{dtype}.gguf"
    if not path.exists():
        write_synthetic_model(path, spec["arch"], vocab=BYTE_VOCAB, dtype=dtype,
                              **{k: v for k, v in spec.items() if k != "arch"})
    return path


def graph_step_ms(eng, batch: int) -> float:
    import pycuda.driver as cuda
    from gpu_timing import decode_key

    start, end = cuda.Event(), cuda.Event()
    key = decode_key(eng, batch)
    start.record(eng.rt.stream)
    for _ in range(REPLAYS):
        eng.graphs.launch(key)
    end.record(eng.rt.stream)
    end.synchronize()
    return end.time_since(start) / REPLAYS


def kernel_profile(eng, batch: int) -> list[tuple[str, int, float]]:
    """(kernel variant, launches, µs per launch) of one eager step, slowest total first."""
    rt = eng.rt
    rt.profile = []
    eng.forward.decode(batch)
    report = rt.profile_report()
    rt.profile = None
    rows = sorted(report.items(), key=lambda kv: -kv[1][1])
    return [(name, count, round(1e3 * ms / count, 2)) for name, (count, ms) in rows]


def measure(eng, name: str, label: str, batch: int, limit: float, profile: bool, out: Path) -> dict:
    from gpu_timing import emit

    rng = np.random.default_rng(batch)
    vocab = eng.config.vocab_size
    slots = [eng.alloc() for _ in range(batch)]
    ids = eng.prefill(slots, [rng.integers(0, vocab, PROMPT).tolist() for _ in slots]).argmax(axis=1).tolist()
    with eng.rt.activate():
        for _ in range(3):  # the first step of a batch size runs eagerly, then is captured
            ids = eng.decode_greedy(slots, ids).tolist()
        t0 = time.perf_counter()
        for _ in range(STEPS):
            ids = eng.decode_greedy(slots, ids).tolist()
        dt = time.perf_counter() - t0
        row = dict(model=name, label=label, batch=batch, card=eng.rt.name,
                   graph_step_ms=round(graph_step_ms(eng, batch), 4), tok_s=round(batch * STEPS / dt, 1))
        kernels = kernel_profile(eng, batch) if profile else []
    if kernels:
        row["launches"] = sum(c for _, c, _ in kernels)
        row["kernels_us"] = kernels
    if batch == 1:
        row["pct_of_bandwidth_limit"] = round(100 * row["tok_s"] / limit, 1)
    for s in slots:
        eng.free(s)
    emit(out, row)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", default="qwen,phi3")
    parser.add_argument("--label", default="this")
    parser.add_argument("--src", type=Path, default=BENCH.parent)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/orcd-latency"))
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    args = parser.parse_args()
    sys.path[:0] = [str(args.src.resolve()), str(BENCH)]
    from gpu_bench import copy_bandwidth

    from gpu.cuda_engine import CudaEngine

    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models.split(","):
        eng = CudaEngine.load(write_model(args.workdir, name), max_batch=max(BATCHES), max_context=1024)
        rt, w = eng.rt, eng.weights
        with rt.activate():
            bandwidth = copy_bandwidth(rt.stream)
        read = rt.allocated["weights"] - (0 if eng.config.tied_embeddings else w.token_embd.nbytes)
        limit = bandwidth / read
        print(f"[{name}: {rt.name}, copy {bandwidth / 1e9:.0f} GB/s, limit {limit:.0f} tok/s]", flush=True)
        for batch in map(int, args.batches.split(",")):
            rows.append(measure(eng, name, args.label, batch, limit, batch in (1, 64), args.out))
        eng.close()
    print("\n| model | version | batch | graph step (GPU) ms | tok/s greedy | launches |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['label']} | {r['batch']} | {r['graph_step_ms']} | {r['tok_s']} | "
              f"{r.get('launches') or ''} |")


if __name__ == "__main__":
    main()
