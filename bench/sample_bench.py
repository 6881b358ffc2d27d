"""Sampling on the GPU (on the device): decode_greedy vs decode_sample on the engine, and the sampler alone.

    python3 bench/sample_bench.py [--vocab-dir .device/vocab] [--baseline DIR] [--out FILE.jsonl]

Engine: a random-weight Qwen2.5-0.5B-shape F16 GGUF (bench/gpu_bench.py's write_model), batch 1/8/32/64,
32-token prompts, 64 steps each of decode_greedy and decode_sample (T 0.8, top-k 40, top-p 0.95, min-p 0.05,
a seed per row): tok/s and ms per step. With --baseline DIR (sample.cu and sample_ops.py of an earlier
version, e.g. from `git show`), that version's sampler runs too, in the same process on the same card (its
kernel compiled from DIR/sample.cu), swapped into gpu.cuda_engine. The sampler alone: its kernels timed with
CUDA events at 1 and 32 rows of vocab 151,936 (GPU time: 20 launches queued behind a spinning kernel, so
the launcher's host time stays out; and one launch on an idle GPU, host time in), next to argmax (the greedy
pick), and pack_params / copy_params / the launcher on the host. Each engine run decodes fresh sequences
from the same prompts (equal context lengths); greedy and each version alternate 3 times, medians reported.
Prints the card name first and a markdown table last; JSON lines go to --out.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BATCHES = (1, 8, 32, 64)
PROMPT, STEPS, VOCAB = 32, 64, 151936
rows_out: list[dict] = []


def record(out: Path | None, **row) -> None:
    rows_out.append(row)
    print(json.dumps(row), flush=True)
    if out is not None:
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")


def bench_params(n: int):
    from gpu.params import SamplingParams

    return [SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, seed=i) for i in range(n)]


def load_baseline(rt, base: Path):
    """(pack_params, copy_params, sample) of the version in `base`, its kernel built from base/sample.cu."""
    from pycuda.compiler import SourceModule

    from gpu.runtime import KERNEL_DIR, ptr

    spec = importlib.util.spec_from_file_location("gpu.ops._sample_baseline", base / "sample_ops.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with rt.activate():
        module = SourceModule((base / "sample.cu").read_text(), arch=rt.arch, no_extern_c=True,
                              include_dirs=[str(KERNEL_DIR)])
        fn = module.get_function("sample")
        fn.prepare("PPPPPPPii")

    def sample(rt_, ids, logits, fparams, iparams, window, window_len, work=None, draws=None):
        n, vocab = logits.shape
        rt_.launch(fn, (n, 1, 1), (1024, 1, 1), ptr(ids), ptr(logits), ptr(fparams), ptr(iparams),
                   ptr(window), ptr(window_len), ptr(draws), vocab, window.shape[1])

    def copy_params(rt_, bufs, host, sent=None):  # that version kept its own record of what was sent
        return mod.copy_params(rt_, bufs, host)

    sample.module = module  # keep the module loaded
    return mod.pack_params, copy_params, sample


def gpu_ms(rt, launch, reps: int = 20) -> float:
    """GPU ms of one launch: batches of `reps` queued behind a ~11 ms spinning kernel, so the host's launch
    overhead stays out of it."""
    from gpu_timing import queued_ms  # (bench/ is on the path)

    return queued_ms(rt, lambda _: launch(), cycles=20_000_000, batches=5, per_batch=reps)


def launched_ms(rt, launch, reps: int = 50) -> float:
    """Event time of one launch on an idle GPU: the launcher's host time included."""
    import pycuda.driver as cuda

    start, end = cuda.Event(), cuda.Event()
    times = []
    for _ in range(reps):
        start.record(rt.stream)
        launch()
        end.record(rt.stream)
        end.synchronize()
        times.append(end.time_since(start))
    return float(np.median(times))


def host_us(fn, reps: int = 300) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(1e6 * float(np.median(times)), 1)


def bench_rows(out, rt, versions: dict, n: int, rng) -> None:
    """The kernels at n rows of VOCAB random logits."""
    from gpu.ops import sample as ops
    from gpu.ops.argmax import argmax

    logits = rt.to_device(rng.normal(0.0, 2.0, (n, VOCAB)).astype(np.float32), "bench")
    params = bench_params(n)
    host = ops.pack_params(params, [5] * n, [[1, 2, 3]] * n)
    dev = [rt.to_device(a, "bench") for a in host]
    ids = rt.empty((n,), np.int32, "bench")
    best = rt.empty((n,), np.uint64, "bench")
    work = ops.sample_workspace(rt, n, VOCAB)
    cases = {f"sample {k}": (lambda s=v[2]: s(rt, ids, logits, *dev, work)) for k, v in versions.items()}
    cases["sample_topk alone"] = lambda: ops.sample_topk(rt, logits, *dev, work["cand"], work["chunk_best"],
                                                         work["chunk_info"])
    cases["argmax (greedy)"] = lambda: argmax(rt, best, logits)
    got = {}
    for label, launch in cases.items():
        gpu = gpu_ms(rt, launch)
        launched = launched_ms(rt, launch)
        if label.startswith("sample "):
            got[label] = ids.get().tolist()
        record(out, section="kernel", version=label, rows=n, vocab=VOCAB, gpu_ms=round(gpu, 4),
               launched_ms=round(launched, 4))
    if len(got) > 1:
        a, b = got.values()
        record(out, section="kernel-agree", rows=n, same_ids=sum(x == y for x, y in zip(a, b, strict=True)))
    p0 = [p.model_copy(update={"top_k": 0, "top_p": 0.9, "min_p": 0.0}) for p in params]
    dev0 = [rt.to_device(a, "bench") for a in ops.pack_params(p0, [5] * n, [[1, 2, 3]] * n)]
    for label, (_, _, sample) in versions.items():
        gpu = gpu_ms(rt, lambda s=sample: s(rt, ids, logits, *dev0, work), reps=2)
        record(out, section="kernel", version=f"sample {label} (top_k 0, top_p 0.9)", rows=n, vocab=VOCAB,
               gpu_ms=round(gpu, 4), launched_ms=None)


def bench_host(out, eng, versions: dict, n: int = 32) -> None:
    """pack_params, copy_params (+ sync) and the launcher's host time at n rows."""
    from gpu.ops import sample as ops

    rt = eng.rt
    params = bench_params(n)
    histories = [list(range(40)) for _ in range(n)]
    logits = rt.empty((n, VOCAB), np.float32, "bench")
    ids = rt.empty((n,), np.int32, "bench")
    work = ops.sample_workspace(rt, n, VOCAB)
    for label, (pack, copy, sample) in versions.items():
        sent: dict = {}
        steps = iter(range(10**6))
        pack_us = host_us(lambda p=pack, st=steps: p(params, [next(st)] * n, histories))
        host = pack(params, [7] * n, histories)
        copy_us = host_us(lambda c=copy, h=host, d=sent: (c(rt, eng.sampler.bufs, h, d), rt.synchronize()))
        views = copy(rt, eng.sampler.bufs, host, sent)
        launch_us = host_us(lambda s=sample, v=views: s(rt, ids, logits, *v, work), reps=100)
        rt.synchronize()
        record(out, section="host", version=label, rows=n, pack_us=pack_us, copy_sync_us=copy_us,
               launch_us=launch_us)


def bench_kernels(out, eng, versions: dict) -> None:
    """The sampler's kernels alone on random logits (GPU time, and with the launcher's host time), argmax
    for comparison, and the host side of one step, per version."""
    rt = eng.rt
    rng = np.random.default_rng(0)
    with rt.activate():
        for n in (1, 32):
            bench_rows(out, rt, versions, n, rng)
        bench_host(out, eng, versions)


def run_greedy(eng, slots, ids):
    t0 = time.perf_counter()
    for _ in range(STEPS):
        ids = eng.decode_greedy(slots, ids).tolist()
    return time.perf_counter() - t0


def run_sampled(eng, slots, ids, fns):
    import gpu.cuda_engine as ce
    import gpu.cuda_sampler as cs

    batch = len(slots)
    current = (ce.pack_params, cs.copy_params, cs.sample)
    eng.sampler.sent.clear()  # the other version wrote the buffers
    ce.pack_params, cs.copy_params, cs.sample = fns
    try:
        params = bench_params(batch)
        histories = [[t] for t in ids]
        t0 = time.perf_counter()
        for step in range(STEPS):
            ids = eng.decode_sample(slots, ids, params, [step] * batch, histories).tolist()
            for h, t in zip(histories, ids, strict=True):
                h.append(t)
        return time.perf_counter() - t0
    finally:
        ce.pack_params, cs.copy_params, cs.sample = current


def bench_engine(out, eng, versions: dict) -> None:
    """Each run on fresh sequences (the same prompts, so every run decodes the same context lengths)."""
    rng = np.random.default_rng(0)
    vocab = eng.config.vocab_size
    for batch in BATCHES:
        prompts = [rng.integers(0, vocab, PROMPT).tolist() for _ in range(batch)]
        step_ms: dict[str, list[float]] = {}
        runs = [("greedy", None), *((f"sampled {k}", v) for k, v in versions.items())] * 3
        warmed = False
        for label, fns in runs:
            slots = [eng.alloc() for _ in range(batch)]
            try:
                ids = eng.prefill(slots, prompts).argmax(axis=1).tolist()
                if not warmed:  # first call of this batch size: graph capture, the sampler's first launch
                    run_greedy(eng, slots, ids)
                    run_sampled(eng, slots, ids, next(iter(versions.values())))
                    for s in slots:
                        eng.free(s)
                    slots = [eng.alloc() for _ in range(batch)]
                    ids = eng.prefill(slots, prompts).argmax(axis=1).tolist()
                    warmed = True
                dt = run_greedy(eng, slots, ids) if fns is None else run_sampled(eng, slots, ids, fns)
            finally:
                for s in slots:
                    eng.free(s)
            step_ms.setdefault(label, []).append(1e3 * dt / STEPS)
            record(out, section="engine", run=label, batch=batch, tok_s=round(batch * STEPS / dt, 1),
                   step_ms=round(1e3 * dt / STEPS, 3))
        g = float(np.median(step_ms["greedy"]))
        for label, ms in step_ms.items():
            if label != "greedy":
                m = float(np.median(ms))
                record(out, section="engine-extra", run=label, batch=batch, extra_ms=round(m - g, 3),
                       tok_s=round(batch * 1e3 / m, 1), greedy_tok_s=round(batch * 1e3 / g, 1))


def table() -> str:
    lines = ["| what | version | rows/batch | figure |", "|---|---|---|---|"]
    for r in rows_out:
        if r["section"] == "kernel":
            lines.append(f"| kernel GPU ms (launched ms) | {r['version']} | {r['rows']} | {r['gpu_ms']} "
                         f"({r['launched_ms']}) |")
        elif r["section"] == "host":
            lines.append(f"| host us: pack / copy+sync / launch | {r['version']} | {r['rows']} | "
                         f"{r['pack_us']} / {r['copy_sync_us']} / {r['launch_us']} |")
        elif r["section"] == "engine-extra":
            lines.append(f"| ms/step over greedy (median of 3) | {r['run']} | {r['batch']} | {r['extra_ms']} "
                         f"({r['tok_s']} vs greedy {r['greedy_tok_s']} tok/s) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-dir", type=Path)
    parser.add_argument("--baseline", type=Path, help="dir with an earlier sample.cu and sample_ops.py")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/orcd-bench"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-engine", action="store_true")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    from bench.gpu_bench import write_model
    from gpu.cuda_engine import CudaEngine
    from gpu.ops import sample as ops

    path = write_model(args.workdir, "qwen-f16", args.vocab_dir)
    eng = CudaEngine.load(path, max_batch=max(BATCHES), max_context=1024)
    record(args.out, section="card", card=eng.rt.name, vocab=eng.config.vocab_size)
    try:
        versions = {"new": (ops.pack_params, ops.copy_params, ops.sample)}
        if args.baseline:
            versions["baseline"] = load_baseline(eng.rt, args.baseline)
        bench_kernels(args.out, eng, versions)
        if not args.no_engine:
            bench_engine(args.out, eng, versions)
    finally:
        eng.close()
    print(f"\ncard: {rows_out[0]['card']}\n" + table())


if __name__ == "__main__":
    main()
