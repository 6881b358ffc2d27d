"""gemm.cu (+ gemm_reduce.cu for split-K): y (+)= a @ w.T + bias on tensor cores, for prompts
longer than gemv takes.

Row invariance: an output element's bits depend on its row of `a`, the weights and the split of K only.
The kernel accumulates every element in ascending 16-wide k steps whatever its tile shape or BK, so the
tile config may follow M (`config_for`); the number of K splits changes the arithmetic, so it follows N,
K and the device alone (`splits_for`). Split partials are summed in ascending split order by
gemm_reduce.cu. They live in a scratch buffer per Runtime (purpose "scratch") sized for `ROW_CAP` rows of
the largest split shape seen; longer inputs run in row chunks of `ROW_CAP` (same arithmetic per row).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInput
from ..runtime import Runtime, ptr
from . import blocks, check
from .dequant_q8 import Q8Matrix, check_weight, expanded


@dataclass(frozen=True)
class Config:
    """One compiled tile shape of gemm.cu: BM x BN block tile, WM x WN warps, BK slices, STAGES deep."""

    bm: int
    bn: int
    wm: int
    wn: int
    bk: int = 32
    stages: int = 4

    @property
    def defines(self) -> dict[str, int]:
        return {"BM": self.bm, "BN": self.bn, "WM": self.wm, "WN": self.wn, "BK": self.bk,
                "STAGES": self.stages}

    @property
    def threads(self) -> int:
        return 32 * self.wm * self.wn

    @property
    def smem(self) -> int:
        return self.stages * (self.bm + self.bn) * (self.bk + 8) * 2

    @property
    def name(self) -> str:
        return f"{self.bm}x{self.bn}x{self.bk}s{self.stages}w{self.wm}{self.wn}"


# every config the selection (or the benchmark) may launch; kernel_cache.VARIANTS lists their defines.
# Measured (bench/gemm_bench.py --sweep, H100 and H200, M = 512): BK 64 beats BK 32 everywhere; 128 x 128
# tiles of 8 warps win once there are about as many tiles as SMs, 64 x 64 below that; 128 x 64 and 128 x 256
# are runners-up kept for the sweep. Session 8 (H100, bench/results/gemm_sweep_h100_s8.log): for K >= 2048
# four warps of 64 x 64 pieces (128 x 128, 242 registers) beat eight of 64 x 32 by 2-14% (Phi-3 o 57.1 ->
# 50.9 µs, down 128.0 -> 109.7, Qwen down 29.7 -> 27.7), and 128 x 256 tiles take Phi-3 gate/up (about four
# waves of 128 x 128 tiles) 192.3 -> 168.3 µs; at K = 896 eight warps stay best (Qwen gate/up 48.8 vs 52.6).
CONFIGS: dict[str, Config] = {c.name: c for c in (
    Config(128, 256, 2, 4, 64, 3),
    Config(128, 128, 2, 4, 64, 3),
    Config(128, 64, 2, 2, 64, 4),
    Config(64, 64, 2, 2, 64, 4),
    Config(32, 64, 2, 2, 32, 4),
    Config(128, 128, 2, 2, 64, 3),
)}
SPLIT_ALIGN = 64  # split boundaries fall on multiples of 64 columns of K (every BK divides it)
MAX_SPLITS = 8
ROW_CAP = 512  # rows per split-K launch (bounds the scratch: splits x ROW_CAP x N floats)
M_REF = 512  # the row count the split choice is tuned for (a prefill chunk); the choice never sees M
SMALL, LARGE, TINY = "64x64x64s4w22", "128x128x64s3w24", "32x64x32s4w22"
DEEP, WIDE = "128x128x64s3w22", "128x256x64s3w24"  # long K: 64 x 64 warp pieces; and many tiles too
DEEP_K = 2048  # K from which DEEP / WIDE replace LARGE

_scratch: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # rt -> [buffers]; the last is current
_attr_set: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # rt -> {config names: smem limit set}


def split_k(k: int, splits: int) -> tuple[int, int]:
    """(k_len, splits actually used): K cut into `splits` ranges aligned to SPLIT_ALIGN (fewer if short)."""
    if splits <= 1 or k <= SPLIT_ALIGN:
        return k, 1
    k_len = blocks(blocks(k, splits), SPLIT_ALIGN) * SPLIT_ALIGN
    return k_len, blocks(k, k_len)


def splits_for(rt: Runtime, n: int, k: int) -> int:
    """K splits for an [*, K] @ [N, K].T product: a function of N, K and the device only (row invariance).
    One when 128 x 128 tiles at M_REF rows already fill the SMs; else enough splits for about two blocks
    per SM, keeping at least 1024 columns of K per split."""
    tiles = blocks(M_REF, 128) * blocks(n, 128)
    if tiles >= rt.n_sm:
        return 1
    return max(1, min(2 * rt.n_sm // tiles, k // 1024, MAX_SPLITS))


def config_for(rt: Runtime, m: int, n: int, k: int, splits: int) -> Config:
    """The tile config (free to follow M and K: every config gives the same bits): 128 x 128 tiles when they
    (x splits) come near one per SM, else 64 x 64; 32 x 64 for a few rows. From K = DEEP_K the 128 x 128
    tiles are four warps of 64 x 64 pieces, or 128 x 256 tiles when there are three waves of 128 x 128."""
    if m <= 32:
        return CONFIGS[TINY]
    tiles = blocks(m, 128) * blocks(n, 128) * splits
    if tiles * 5 < rt.n_sm * 4:
        return CONFIGS[SMALL]
    if k < DEEP_K:
        return CONFIGS[LARGE]
    return CONFIGS[WIDE] if tiles >= 3 * rt.n_sm else CONFIGS[DEEP]


def scratch(rt: Runtime, floats: int):
    """The split-K partials buffer of this runtime, at least `floats` long. A larger need allocates a
    larger buffer and keeps the old one (a captured CUDA graph may still point at it)."""
    held = _scratch.setdefault(rt, [])
    if not held or held[-1].size < floats:
        held.append(rt.empty((floats,), np.float32, "scratch"))
    return held[-1]


def _kernel(rt: Runtime, cfg: Config):
    fn = rt.kernel("gemm", "PPPPPiiiii", **cfg.defines)
    done = _attr_set.setdefault(rt, set())
    if cfg.name not in done:
        import pycuda.driver as cuda

        fn.set_attribute(cuda.function_attribute.MAX_DYNAMIC_SHARED_SIZE_BYTES, cfg.smem)
        done.add(cfg.name)
    return fn


def launch(rt: Runtime, y, a, w, bias, accumulate: bool, cfg: Config, splits: int) -> None:
    """y (+)= a @ w.T + bias with this tile config and K split (checked arrays; tests and benchmarks
    call it to pin a config)."""
    m, k = a.shape
    n = w.shape[0]
    if m == 0 or n == 0:
        return
    fn = _kernel(rt, cfg)
    k_len, splits = split_k(k, splits)
    if splits == 1:
        rt.launch(fn, (blocks(n, cfg.bn), blocks(m, cfg.bm), 1), (cfg.threads, 1, 1), ptr(y), ptr(a), ptr(w),
                  ptr(bias), 0, m, n, k, k, int(accumulate), shared=cfg.smem)
        return
    part = scratch(rt, splits * ROW_CAP * n)
    threads = (cfg.threads, 1, 1)
    for r0 in range(0, m, ROW_CAP):
        rows = min(ROW_CAP, m - r0)
        ys, as_ = (y, a) if rows == m else (y[r0 : r0 + rows], a[r0 : r0 + rows])  # (a view costs host time)
        grid = (blocks(n, cfg.bn), blocks(rows, cfg.bm), splits)
        rt.launch(fn, grid, threads, ptr(ys), ptr(as_), ptr(w), 0, ptr(part), rows, n, k, k_len, 0,
                  shared=cfg.smem)
        per_thread = 4 if n % 4 == 0 else 1
        reduce = rt.kernel("gemm_reduce", "PPPiiii")
        rt.launch(reduce, (blocks(rows * n, 256 * per_thread), 1, 1), (256, 1, 1), ptr(ys), ptr(part),
                  ptr(bias), rows, n, splits, int(accumulate))


def gemm(rt: Runtime, y, a, w, bias=None, accumulate: bool = False) -> None:
    """y [M, N] f32 (+)= a [M, K] operand @ w [N, K].T + bias [N] f32; K % 8 == 0. A Q8Matrix w is
    expanded to the operand type first (dequant_q8.cu)."""
    m, k = a.shape
    n = w.shape[0]
    if k % 8:
        raise InvalidInput(f"a: K = {k} is not a multiple of 8")
    check(a, "a", rt.operand, (m, k))
    check_weight(rt, w, "w", (-1, k))  # a Q8Matrix is expanded to an operand array below
    check(y, "y", np.float32, (m, n))
    if bias is not None:
        check(bias, "bias", np.float32, (n,))
    if isinstance(w, Q8Matrix) and m > 0:  # (launch returns at once for zero rows)
        w = expanded(rt, w)
    splits = splits_for(rt, n, k)
    launch(rt, y, a, w, bias, accumulate, config_for(rt, m, n, k, splits), splits)
