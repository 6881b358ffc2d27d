"""GPU time alone, for the device benches: the launches to time queue up behind a one-thread kernel that
busy-waits, so the host has queued them all before the first starts, and CUDA events around them measure
the GPU, not the launchers' host time. pycuda is imported on first use (the benches import this module
from bench/, which is on the path when they run as scripts).
"""

from __future__ import annotations

import numpy as np

SPIN_SRC = """extern "C" __global__ void spin(long long cycles) {
    const long long t0 = clock64();
    while (clock64() - t0 < cycles) {}
}"""
_spin: dict = {}  # Runtime -> the spin kernel, compiled in its context


def spin(rt, cycles: int) -> None:
    """Hold rt's stream for `cycles` GPU clocks (about 5 ms per 10 million): what is launched meanwhile
    waits behind it and then runs back to back. rt's context must be current."""
    if rt not in _spin:
        from pycuda.compiler import SourceModule

        fn = SourceModule(SPIN_SRC, arch=rt.arch, no_extern_c=True).get_function("spin")
        fn.prepare("q")
        _spin[rt] = fn
    _spin[rt].prepared_async_call((1, 1, 1), (1, 1, 1), rt.stream, np.int64(cycles))


def queued_ms(rt, enqueue, *, cycles: int, batches: int, per_batch: int = 1, warm_up: int = 2) -> float:
    """Median GPU ms per enqueue(r) call: `warm_up` untimed calls (r = 0, 1, ...), then `batches` batches of
    `per_batch` calls (r = 0 .. per_batch - 1), each batch queued behind spin(rt, cycles) and timed by
    events on rt's stream. The spin must outlast the host's queuing of a batch; enqueue may sync at its
    end (the events still bracket its work)."""
    import pycuda.driver as cuda

    with rt.activate():
        for r in range(warm_up):
            enqueue(r)
        rt.synchronize()
        start, end = cuda.Event(), cuda.Event()
        times = []
        for _ in range(batches):
            spin(rt, cycles)
            start.record(rt.stream)
            for r in range(per_batch):
                enqueue(r)
            end.record(rt.stream)
            end.synchronize()
            times.append(end.time_since(start) / per_batch)
    return float(np.median(times))


def decode_key(eng, batch: int):
    """The key of the graph a short-context decode step of `batch` rows replays: the smallest one-pass
    attention's when it is captured (CudaEngine.direct_attention), else the two-pass one."""
    from gpu.cuda_engine import direct_tiers

    key = ("direct", batch, direct_tiers(batch)[0])
    return key if key in eng.graphs else batch


def graph_ms(rt, graphs, key, enqueue, *, replays: int = 8, skip: int = 2) -> float:
    """Median ms of one replay of what enqueue() launches, run once eagerly (loading its kernels), then
    captured as one CUDA graph under `key` in `graphs` (a DecodeGraphs) with programmatic launch, as the
    engine's decode graphs are; the first `skip` of `replays` replays are not counted."""
    import pycuda.driver as cuda

    enqueue()
    with rt.programmatic():
        graphs.capture(key, enqueue, str(key))
    start, end = cuda.Event(), cuda.Event()
    times = []
    for _ in range(replays):
        start.record(rt.stream)
        graphs.launch(key)
        end.record(rt.stream)
        end.synchronize()
        times.append(end.time_since(start))
    return float(np.median(times[skip:]))


def emit(out, row: dict) -> None:
    """One result row: printed (the device run's log) and appended to the JSON-lines file at path `out`."""
    import json

    print(json.dumps(row), flush=True)
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")
