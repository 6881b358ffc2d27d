"""GGUF fuzzing figures: N structure-aware hostile files through the reader, config, tokenizer, weights.

Usage: python bench/fuzz_gguf.py [--cases 100000] [--procs 2] [--repro SEED:NUMBER [--out FILE]]

Seeds: SmolLM2 and Qwen2.5-coder (whole header and tensor table, arrays cut to 256 entries, sparse
data), the five llama.cpp vocab files, and four tiny synthetic models (llama q8_0, qwen2/phi3/gpt2
f16, real data, so `load_weights` dequantises them). Cases are spread evenly over the seeds; each
runs in a pool process under a 10 s SIGALRM (tests/reliability/gguf_harness.py). Prints counts per
stage and outcome, crashes (any exception outside the stage's error classes) with their repro key,
hangs (> 1 s in a stage), the slowest stage times and the peak-RSS growth against the file size.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from tests.reliability.gguf_harness import run_case  # noqa: E402
from tests.reliability.gguf_mutator import Seed, build_case, seed_from_gguf  # noqa: E402

BATCH = 250
_SEEDS: list[Seed] = []
_WORKDIR: Path | None = None


def make_seeds(workdir: Path) -> list[Seed]:
    from gguf_loader import assets
    from gguf_loader.synthetic import write_synthetic_model

    seeds = [seed_from_gguf(assets.fetch(name)) for name in assets.MODELS]
    vocab_dir = assets.fetch_vocab_tests()
    seeds += [seed_from_gguf(vocab_dir / f"ggml-vocab-{name}.gguf") for name in assets.VOCAB_NAMES]
    for arch, dtype in (("llama", "q8_0"), ("qwen2", "f16"), ("phi3", "f16"), ("gpt2", "f16")):
        path = write_synthetic_model(workdir / f"synthetic-{arch}.gguf", arch, vocab="bytes", dim=32,
                                     n_layers=1, n_heads=2, dtype=dtype, vocab_size=300,
                                     context_length=256 if arch == "gpt2" else 512,
                                     original_context_length=128 if arch == "phi3" else None)
        seeds.append(seed_from_gguf(path, max_array=1024))
    return seeds


def _init(seeds: list[Seed], workdir: str) -> None:
    global _SEEDS, _WORKDIR
    logging.disable(logging.WARNING)  # out-of-vocab special ids etc. are logged, not raised
    _SEEDS, _WORKDIR = seeds, Path(workdir)


def _run_batch(task: tuple[int, int, int]) -> list:
    seed_index, first, count = task
    seed = _SEEDS[seed_index]
    return [run_case(build_case(seed, n), _WORKDIR) for n in range(first, first + count)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--repro", metavar="SEED:NUMBER", help="write one case and run it in this process")
    ap.add_argument("--out", type=Path, help="with --repro: where to write the case's file")
    args = ap.parse_args(argv)
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None  # tmpfs: case files never touch a disk
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-gguf-", dir=shm))
    seeds = make_seeds(workdir)
    if args.repro:
        return _repro(seeds, args.repro, args.out, workdir)

    per_seed = -(-args.cases // len(seeds))
    tasks = [(i, first, min(BATCH, per_seed - first)) for first in range(0, per_seed, BATCH)
             for i in range(len(seeds))]
    print(f"{len(seeds)} seeds x {per_seed} cases = {len(seeds) * per_seed} cases, {args.procs} processes")
    for s in seeds:
        print(f"  {s.name}: header {len(s.header)} B, {len(s.fields)} fields, file {s.size / 1e6:.2f} MB, "
              f"data {'kept' if s.data is not None else 'sparse'}")
    started = time.perf_counter()
    outcomes = []
    with mp.Pool(args.procs, initializer=_init, initargs=(seeds, str(workdir))) as pool:
        results = pool.imap_unordered(_run_batch, tasks)
        for _ in tasks:  # a case stuck in C past its SIGALRM would stall its batch: give up loudly
            try:
                outcomes.extend(results.next(timeout=BATCH * 10 + 120))
            except mp.TimeoutError:
                print("a batch did not finish within its time limit: a case hangs beyond SIGALRM")
                pool.terminate()
                return 1
    elapsed = time.perf_counter() - started
    report(outcomes, elapsed)
    return 1 if any(o.crashes or o.hang for o in outcomes) else 0


def report(outcomes: list, elapsed: float) -> None:
    n = len(outcomes)
    print(f"\n{n} cases in {elapsed:.0f} s ({n / elapsed:.0f} cases/s)")
    by_stage: dict[str, Counter] = {}
    for o in outcomes:
        for stage, result in o.results.items():
            by_stage.setdefault(stage, Counter())[result] += 1
    for stage in ("open", "config", "tokenizer", "weights"):
        counts = by_stage.get(stage, Counter())
        shown = ", ".join(f"{k} {v}" for k, v in counts.most_common())
        print(f"  {stage:9s} {sum(counts.values()):7d} runs: {shown}")
    crashes = [o for o in outcomes if o.crashes]
    hangs = [o for o in outcomes if o.hang]
    print(f"crashes (exception outside the stage's error classes): {len(crashes)}")
    kinds = Counter((stage, msg.split("(")[0]) for o in crashes for stage, msg in o.crashes.items())
    for (stage, kind), count in kinds.most_common():
        example = next(o for o in crashes if o.crashes.get(stage, "").startswith(kind))
        print(f"  {count:6d} x {stage}: {example.crashes[stage][:200]}  "
              f"(repro {example.seed}:{example.number})")
    print(f"hangs (> 1 s in a stage, or stopped at 10 s): {len(hangs)}")
    for o in hangs[:10]:
        print(f"  {o.seed}:{o.number} {o.seconds}")
    for stage in ("open", "config", "tokenizer", "weights"):
        times = sorted(o.seconds[stage] for o in outcomes if stage in o.seconds)
        if times:
            print(f"  {stage:9s} time: median {times[len(times) // 2] * 1e3:.2f} ms, "
                  f"p99.9 {times[int(len(times) * 0.999)] * 1e3:.1f} ms, max {times[-1] * 1e3:.1f} ms")
    worst_open = max(outcomes, key=lambda o: o.open_rss_growth)
    worst = max(outcomes, key=lambda o: o.rss_growth)
    over = [o for o in outcomes if o.open_rss_growth > o.size + (16 << 20)]
    print(f"peak RSS growth in open_gguf: max {worst_open.open_rss_growth / 2**20:.1f} MiB "
          f"({worst_open.seed}:{worst_open.number}, file {worst_open.size / 2**20:.1f} MiB); "
          f"cases growing more than file size + 16 MiB: {len(over)}")
    print(f"peak RSS growth over a whole case: max {worst.rss_growth / 2**20:.1f} MiB "
          f"({worst.seed}:{worst.number}, file {worst.size / 2**20:.1f} MiB)")


def _repro(seeds: list[Seed], key: str, out: Path | None, workdir: Path) -> int:
    name, number = key.rsplit(":", 1)
    seed = next(s for s in seeds if s.name == name)
    case = build_case(seed, int(number))
    print(f"{key}: edits {case.edits}, size {case.size}")
    if out:
        case.write(out)
        print(f"written to {out}")
    _init(seeds, str(workdir))
    outcome = run_case(case, workdir)
    print(outcome)
    return 1 if outcome.crashes or outcome.hang else 0


if __name__ == "__main__":
    raise SystemExit(main())
