"""sample_topk.cu + sample.cu: the sampler chain of gpu/sampling.py on the device; only ids come back.

`sample` launches both: sample_topk (grid chunks x rows) applies the penalties and reduces each CHUNK ids
of a row to its best key, finite count, NaN flag and (rows with a small top-k) its top-k keys; sample (one
block per row) merges them and draws. `pack_params` / `copy_params` prepare the parameters on the host,
reusing what did not change since the last step (the packed rows of the same SamplingParams objects, the
device copies of unchanged arrays).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pycuda.driver as cuda

from ..errors import InvalidInput
from ..params import SamplingParams
from ..runtime import Runtime, ptr
from . import blocks, check

THREADS = 1024
TOPK_THREADS = 256
MAX_VOCAB = 1 << 24  # ids fit the kernel's 24-bit key field
CAP = 1024  # survivors of top-k and min-p handled by the fast sorted path (sample.cu)
CHUNK = 4096  # ids per sample_topk block
MERGE_CAP = 4096  # candidate keys per row: the split path takes rows with top_k * n_chunks <= MERGE_CAP
N_FPARAMS, N_IPARAMS = 6, 4
ID_BITS = 24


def n_chunks(vocab: int) -> int:
    return blocks(vocab, CHUNK)


def split_path(top_k: int, vocab: int) -> bool:
    """Whether a sampled row with this top_k takes sample.cu's split path (no pass over the row there)."""
    return 0 < top_k <= CAP and top_k * n_chunks(vocab) <= MERGE_CAP


def sample_workspace(rt: Runtime, rows: int, vocab: int) -> dict:
    """Device arrays that carry sample_topk's results to sample for up to `rows` rows of `vocab` logits."""
    c = n_chunks(vocab)
    return {"cand": rt.empty((rows, MERGE_CAP), np.uint64, "sampling"),
            "chunk_best": rt.empty((rows, c), np.uint64, "sampling"),
            "chunk_info": rt.empty((rows, c), np.uint32, "sampling")}


def sample_topk(rt: Runtime, logits, fparams, iparams, window, window_len, cand, chunk_best,
                chunk_info, fed=None) -> None:
    """sample_topk.cu on logits [n, vocab] f32 (penalised in place): chunk_best [n, c] u64 and chunk_info
    [n, c] u32 (finite count | NaN/+inf << 31) per chunk of CHUNK ids; cand [n, MERGE_CAP] u64 for the rows
    of `split_path`. A window entry -(j + 1) stands for fed[j] (int32 on the device: tokens an earlier step
    picked there). `sample_topk_reference` is its numpy twin."""
    n, vocab = logits.shape
    c = n_chunks(vocab)
    check(logits, "logits", np.float32, (n, vocab))
    check(fparams, "fparams", np.float64, (n, N_FPARAMS))
    check(iparams, "iparams", np.uint32, (n, N_IPARAMS))
    check(window, "window", np.int32, (n, -1))
    check(window_len, "window_len", np.int32, (n,))
    check(cand, "cand", np.uint64, (-1, MERGE_CAP))
    check(chunk_best, "chunk_best", np.uint64, (-1, c))
    check(chunk_info, "chunk_info", np.uint32, (-1, c))
    if fed is not None:
        check(fed, "fed", np.int32, (-1,))
    if min(cand.shape[0], chunk_best.shape[0], chunk_info.shape[0]) < n:
        raise InvalidInput(f"workspace: rows for fewer than {n} rows")
    if vocab >= MAX_VOCAB:
        raise InvalidInput(f"logits: vocab {vocab} >= {MAX_VOCAB}, more than the kernel's id field holds")
    fn = rt.kernel("sample_topk", "PPPPPPPPPii")
    rt.launch(fn, (c, n, 1), (TOPK_THREADS, 1, 1), ptr(logits), ptr(fparams), ptr(iparams), ptr(window),
              ptr(window_len), ptr(cand), ptr(chunk_best), ptr(chunk_info), ptr(fed), vocab, window.shape[1])


def sample(rt: Runtime, ids, logits, fparams, iparams, window, window_len, work: dict, draws=None,
           fed=None, host_ids: int = 0) -> None:
    """ids [n] int32 = each row's token from logits [n, vocab] f32 (penalised in place) with the packed
    parameters of `pack_params`; -1 marks a row with NaN/+inf logits or no finite logit. work:
    `sample_workspace` for >= n rows of this vocab. draws [n] f64, if given, receives each row's
    philox_uniform. fed: what negative window entries stand for (`sample_topk`); may be ids itself.
    host_ids: the device address of [n] int32 mapped pinned host memory that also receives the ids (read
    once the kernel is done: no copy to queue after it), or 0."""
    n, vocab = logits.shape
    check(ids, "ids", np.int32, (n,))
    if draws is not None:
        check(draws, "draws", np.float64, (n,))
    sample_topk(rt, logits, fparams, iparams, window, window_len, work["cand"], work["chunk_best"],
                work["chunk_info"], fed)
    fn = rt.kernel("sample", "PPPPPPPPPii")
    rt.launch(fn, (n, 1, 1), (THREADS, 1, 1), ptr(ids), host_ids, ptr(logits), ptr(fparams), ptr(iparams),
              ptr(work["cand"]), ptr(work["chunk_best"]), ptr(work["chunk_info"]), ptr(draws), vocab,
              n_chunks(vocab))


# --- host side ---------------------------------------------------------------------------------------
_rows: dict[int, tuple] = {}  # id(params) -> (params, fparams row, (top_k, seed lo, seed hi), last_n)
_last_list: tuple = ((), None)  # (ids of the last params_list, its packed (fparams, iparams[:, :3], last_n))


def _packed_row(i: int, p: SamplingParams) -> tuple:
    hit = _rows.get(id(p))
    if hit is not None and hit[0] is p:
        return hit
    if p.seed is None:
        raise InvalidInput(f"params_list[{i}].seed: None; resolve_seed() once per request")
    if p.logit_bias or p.ignore_eos:
        raise InvalidInput(f"params_list[{i}]: logit_bias / ignore_eos are not sampled on the GPU")
    row = (p, (p.temperature, p.top_p, p.min_p, p.repetition_penalty, p.presence_penalty,
               p.frequency_penalty), (min(p.top_k, 2**32 - 1), p.seed & 0xFFFFFFFF, p.seed >> 32),
           p.penalty_last_n if p.penalises else 0)
    if len(_rows) >= 4096:
        _rows.clear()
    _rows[id(p)] = row  # holds p: its id stays its own while cached
    return row


def pack_params(params_list: Sequence[SamplingParams], steps: Sequence[int],
                histories: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Host arrays for `sample`: fparams [n, 6] f64, iparams [n, 4] u32, window [n, width] i32 (each row's
    penalty window: the last penalty_last_n ids of its history, padded; empty where the penalties change
    nothing; a history entry -(j + 1) stands for a token fed[j] on the device, see `sample_topk`),
    window_len [n] i32. Every seed must be set (`SamplingParams.resolve_seed()` once per
    request); logit bias and ignore_eos are refused."""
    global _last_list
    n = len(params_list)
    if not n == len(steps) == len(histories):
        raise InvalidInput(f"{n} params but {len(steps)} steps and {len(histories)} histories")
    key = tuple(map(id, params_list))
    last_key, packed = _last_list
    if key != last_key or packed is None:
        rows = [_packed_row(i, p) for i, p in enumerate(params_list)]
        last_ns = [r[3] for r in rows]
        iparams = np.zeros((n, N_IPARAMS), np.uint32)
        iparams[:, :3] = np.array([r[2] for r in rows], np.uint32).reshape(n, 3)
        packed = (np.array([r[1] for r in rows], np.float64).reshape(n, N_FPARAMS), iparams, last_ns,
                  any(last_ns), tuple(params_list))  # the objects whose ids make the key stay alive
        _last_list = (key, packed)
    fparams, iparams, last_ns, penalised, _ = packed
    if n and not (0 <= min(steps) and max(steps) < 2**32):
        i = next(i for i, s in enumerate(steps) if not 0 <= s < 2**32)
        raise InvalidInput(f"steps[{i}]: {steps[i]} outside [0, 2**32)")
    iparams = iparams.copy()
    iparams[:, 3] = steps
    if not penalised:  # no row's penalties change anything: empty windows
        return fparams.copy(), iparams, np.zeros((n, 1), np.int32), np.zeros(n, np.int32)
    windows = {}
    for i, last_n in enumerate(last_ns):
        if last_n:
            history = histories[i]
            start = 0 if last_n < 0 else max(len(history) - last_n, 0)
            windows[i] = list(history[start:])
    width = max([1, *(len(w) for w in windows.values())])
    window = np.zeros((n, width), np.int32)  # [n, width]
    window_len = np.zeros(n, np.int32)
    for i, w in windows.items():
        window[i, : len(w)] = w
        window_len[i] = len(w)
    return fparams.copy(), iparams, window, window_len


def copy_params(rt: Runtime, bufs: dict, host: tuple[np.ndarray, ...], sent: dict) -> tuple:
    """Copy `pack_params`' arrays into the preallocated device buffers `bufs` (fparams, iparams, window,
    window_len: each with room for the rows; window for max_rows * max_width ids); returns device views.
    `sent` ({name: the host copy last sent into bufs}, kept by the owner of bufs) skips an array equal to
    the one sent last, and the windows are not sent at all when every window is empty (none is read)."""
    fparams, iparams, window, window_len = host
    n, width = window.shape
    if n * width > bufs["window"].size:
        raise InvalidInput(f"histories: penalty windows of {width} ids x {n} rows exceed the buffer")
    views = (bufs["fparams"][:n], bufs["iparams"][:n], bufs["window"][: n * width].reshape(n, width),
             bufs["window_len"][:n])
    any_window = bool(window_len.any())
    for name, dev, arr in zip(("fparams", "iparams", "window", "window_len"), views, host, strict=True):
        if name == "window" and not any_window:
            continue
        last = sent.get(name)
        if last is not None and last.shape == arr.shape and np.array_equal(last, arr):
            continue
        arr = np.ascontiguousarray(arr)
        cuda.memcpy_htod_async(dev.gpudata, arr, rt.stream)
        sent[name] = arr.copy()
    return views


# --- numpy twin of sample_topk.cu ----------------------------------------------------------------------
def keys(row: np.ndarray) -> np.ndarray:
    """The kernels' 56-bit keys [vocab] u64 of a float32 row: (order-preserving bits << 24) | (2^24-1-id),
    -0 keyed as +0, 0 for -inf and NaN (and +inf)."""
    row = np.asarray(row, np.float32)
    bits = row.view(np.uint32).astype(np.uint64)
    bits[bits == 0x80000000] = 0  # -0 is 0
    neg = (bits & np.uint64(0x80000000)) != 0
    mono = np.where(neg, ~bits & np.uint64(0xFFFFFFFF), bits | np.uint64(0x80000000))
    ids = np.arange(row.shape[0], dtype=np.uint64)
    k = (mono << np.uint64(ID_BITS)) | (np.uint64((1 << ID_BITS) - 1) - ids)
    return np.where(np.isfinite(row), k, np.uint64(0))


def sample_topk_reference(logits: np.ndarray, top_k: Sequence[int], temperature: Sequence[float]
                          ) -> tuple[np.ndarray, np.ndarray, list[dict[int, np.ndarray]]]:
    """What sample_topk writes for already-penalised logits [n, vocab]: chunk_best [n, c] u64, chunk_info
    [n, c] u32, and per row {chunk: its candidate keys sorted descending, zero-padded to top_k} for the
    split-path rows' chunks without NaN/+inf (as sets: the kernel writes them in any order)."""
    n, vocab = logits.shape
    c = n_chunks(vocab)
    best = np.zeros((n, c), np.uint64)
    info = np.zeros((n, c), np.uint32)
    cands: list[dict[int, np.ndarray]] = []
    for r in range(n):
        k_row = keys(logits[r])
        row_cands = {}
        for j in range(c):
            k = k_row[j * CHUNK : (j + 1) * CHUNK]
            v = logits[r, j * CHUNK : (j + 1) * CHUNK]
            bad = bool((~(v < np.inf)).any())
            best[r, j] = k.max()
            info[r, j] = np.count_nonzero(np.isfinite(v)) | (0x80000000 if bad else 0)
            if not bad and temperature[r] != 0.0 and split_path(top_k[r], vocab):
                top = np.sort(k)[::-1][: top_k[r]]
                row_cands[j] = np.concatenate([top, np.zeros(top_k[r] - top.shape[0], np.uint64)])
        cands.append(row_cands)
    return best, info, cands
