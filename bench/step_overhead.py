"""Where a decode-ahead token's time goes besides its CUDA graph: the stream operations that
`CudaEngine.launch_decode` queues around the graph, added one at a time and each chain queued back to back
behind a busy-wait (bench/gpu_timing.py), so the figures are GPU time per step with no host in the way;
then the product's loop itself (launch step k + 1, read step k) for the wall time per token. Random-weight
Qwen2.5-0.5B-shape (and Phi-3-mini-shape) F16 models with the byte vocabulary of the real size.

    python3 bench/step_overhead.py --out $OUT/overhead.jsonl [--models qwen,phi3] [--batches 1,8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
PROMPT, STEPS, CYCLES = 32, 200, 40_000_000


def chains(eng, n: int) -> dict:
    """name -> enqueue(r): each chain adds one kind of stream operation to the one before."""
    import pycuda.driver as cuda
    from gpu_timing import decode_key

    from gpu.cuda_sampler import NEG_INF_F32
    from gpu.cuda_sampler import _memset_2d as memset_2d
    from gpu.ops.sample import copy_params, pack_params, sample
    from gpu.params import SamplingParams

    fwd, smp, key = eng.forward, eng.sampler, decode_key(eng, n)
    logits, ids = fwd.logits[:n], fwd.fed[:n]
    params = [SamplingParams(temperature=0.0, seed=i) for i in range(n)]
    host = pack_params(params, [1] * n, [[1]] * n)
    views = copy_params(eng.rt, smp.bufs, host, {})
    iparams = np.ascontiguousarray(host[1])

    def graph(r):
        eng.graphs.launch(key)

    def inputs(r):
        fwd.set_inputs(eng.inputs.host)
        graph(r)

    def params_copy(r):
        inputs(r)
        cuda.memcpy_htod_async(views[1].gpudata, iparams, eng.rt.stream)

    def sampler(r):
        params_copy(r)
        sample(eng.rt, ids, logits, *views, smp.work, fed=fwd.fed)

    def ids_back(r):  # the ids copied back after the sampler (the product until session 7)
        sampler(r)
        cuda.memcpy_dtoh_async(smp.host_ids[0, :n], ids.gpudata, eng.rt.stream)

    def ids_mapped(r):  # the sampler kernel writes them into mapped host memory itself (the product now)
        params_copy(r)
        sample(eng.rt, ids, logits, *views, smp.work, fed=fwd.fed, host_ids=smp._ring_at)

    def ban(r):  # one rectangle, as the sampler bans an id of every row
        if memset_2d is not None:
            memset_2d(int(logits.gpudata), 4 * logits.shape[1], NEG_INF_F32, 1, n, eng.rt.stream)
        else:
            for row in range(n):
                cuda.memset_d32_async(int(logits.gpudata) + row * 4 * logits.shape[1], NEG_INF_F32, 1,
                                      eng.rt.stream)
        ids_mapped(r)

    return {"graph": graph, "+inputs H2D": inputs, "+params H2D": params_copy, "+sampler kernels": sampler,
            "+ids D2H": ids_back, "+sampler, ids mapped": ids_mapped, "+ban memset": ban}


def loop_ms(eng, slots: list[int], banned: bool) -> tuple[float, float, float]:
    """Wall ms per step of the decode-ahead loop (launch step k + 1, fed, then read step k), and of it the
    ms in launch_decode and in reading the pick."""
    from gpu.params import SamplingParams

    n = len(slots)
    params = [SamplingParams(temperature=0.0, seed=i) for i in range(n)]
    bans = [(0,)] * n if banned else None
    pick = eng.launch_decode(slots, [1] * n, params, [1] * n, [[1]] * n, bans)
    launching = reading = 0.0
    t0 = time.perf_counter()
    for step in range(STEPS):
        t1 = time.perf_counter()
        nxt = eng.launch_decode(slots, [None] * n, params, [step + 2] * n, [[1]] * n, bans)
        t2 = time.perf_counter()
        pick.ids()
        reading += time.perf_counter() - t2
        launching += t2 - t1
        pick = nxt
    pick.ids()
    return tuple(round(1e3 * t / STEPS, 4) for t in (time.perf_counter() - t0, launching, reading))


def profile(eng, slots: list[int], out: Path) -> None:
    """cProfile of the loop (with a ban), the top functions by own time to `out`."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    loop_ms(eng, slots, True)
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(30)
    out.write_text(text.getvalue())


def prefilled(eng, n: int) -> list[int]:
    slots = [eng.alloc() for _ in range(n)]
    eng.prefill(slots, [list(range(1, PROMPT + 1))] * n)
    return slots


def free(eng, slots: list[int]) -> None:
    for s in slots:
        eng.free(s)


def decode_inputs(eng, slots: list[int], pos: int) -> None:
    """The host inputs of a decode step of `slots` (token 1) at position `pos`, padded to the bucket."""
    n = len(slots)
    bucket = next(b for b in eng.buckets if b >= n)
    eng.inputs.host[:3, :bucket] = [[1], [0], [eng.scratch_slot]]
    eng.inputs.host[1, :n], eng.inputs.host[2, :n] = pos, slots


def replay(eng, key) -> None:
    eng.forward.set_inputs(eng.inputs.host)
    eng.graphs.launch(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", default="qwen")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/orcd-latency"))
    args = parser.parse_args()
    sys.path[:0] = [str(BENCH.parent), str(BENCH)]
    from decode_latency import write_model
    from gpu_timing import decode_key, emit, queued_ms

    from gpu.cuda_engine import CudaEngine
    from gpu.ops.attention_decode import DIRECT_CTX

    args.workdir.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        eng = CudaEngine.load(write_model(args.workdir, name), max_batch=64, max_context=1024)
        eng.warm_up()
        for n in map(int, args.batches.split(",")):
            row = {"model": name, "card": eng.rt.name, "batch": n}
            slots = prefilled(eng, n)
            decode_inputs(eng, slots, PROMPT)
            with eng.rt.activate():
                eng.forward.set_inputs(eng.inputs.host)  # "graph" replays these: the same context length
                steps = chains(eng, n)
            for what, enqueue in steps.items():
                row[what] = round(queued_ms(eng.rt, enqueue, cycles=CYCLES, batches=5, per_batch=50), 4)
            for pos in (32, 96, 128, 192, 256, 384, DIRECT_CTX - 1, 1000):  # the graph alone at one length
                decode_inputs(eng, slots, pos)
                keys = {"two-pass": n}
                if pos < DIRECT_CTX:
                    keys["one-pass"] = decode_key(eng, n)
                for form, key in keys.items():
                    row[f"{form} @{pos}"] = round(queued_ms(eng.rt, lambda r, k=key, e=eng: replay(e, k),
                                                           cycles=CYCLES, batches=5, per_batch=50), 4)
            for label, banned in (("loop ms/step (all, launch, read)", False), ("loop ms/step, ban", True)):
                free(eng, slots)
                slots = prefilled(eng, n)
                row[label] = loop_ms(eng, slots, banned)
            free(eng, slots)
            slots = prefilled(eng, n)
            profile(eng, slots, args.out.with_name(f"profile_{name}_b{n}.txt"))
            free(eng, slots)
            emit(args.out, row)
        eng.close()


if __name__ == "__main__":
    main()
