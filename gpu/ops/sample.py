"""sample.cu: the sampler chain of gpu/sampling.py on the device, one block per row; only ids come back."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pycuda.driver as cuda

from ..errors import InvalidInput
from ..params import SamplingParams
from ..runtime import Runtime, ptr
from . import check

THREADS = 1024
MAX_VOCAB = 1 << 24  # ids fit the kernel's 24-bit key field
CAP = 1024  # survivors of top-k and min-p handled by the fast sorted path (sample.cu)
N_FPARAMS, N_IPARAMS = 6, 4


def sample(rt: Runtime, ids, logits, fparams, iparams, window, window_len, draws=None) -> None:
    """ids [n] int32 = each row's token from logits [n, vocab] f32 (penalised in place) with the packed
    parameters of `pack_params`; -1 marks a row with NaN/+inf logits or no finite logit. draws [n] f64,
    if given, receives each row's philox_uniform."""
    n, vocab = logits.shape
    check(logits, "logits", np.float32, (n, vocab))
    check(ids, "ids", np.int32, (n,))
    check(fparams, "fparams", np.float64, (n, N_FPARAMS))
    check(iparams, "iparams", np.uint32, (n, N_IPARAMS))
    check(window, "window", np.int32, (n, -1))
    check(window_len, "window_len", np.int32, (n,))
    if draws is not None:
        check(draws, "draws", np.float64, (n,))
    if vocab >= MAX_VOCAB:
        raise InvalidInput(f"logits: vocab {vocab} >= {MAX_VOCAB}, more than the kernel's id field holds")
    fn = rt.kernel("sample", "PPPPPPPii")
    rt.launch(fn, (n, 1, 1), (THREADS, 1, 1), ptr(ids), ptr(logits), ptr(fparams), ptr(iparams), ptr(window),
              ptr(window_len), ptr(draws), vocab, window.shape[1])


def pack_params(params_list: Sequence[SamplingParams], steps: Sequence[int],
                histories: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Host arrays for `sample`: fparams [n, 6] f64, iparams [n, 4] u32, window [n, width] i32 (each row's
    penalty window: the last penalty_last_n ids of its history, padded), window_len [n] i32. Every seed
    must be set (`SamplingParams.resolve_seed()` once per request); logit bias and ignore_eos are refused."""
    n = len(params_list)
    if not n == len(steps) == len(histories):
        raise InvalidInput(f"{n} params but {len(steps)} steps and {len(histories)} histories")
    fparams = np.zeros((n, N_FPARAMS), np.float64)
    iparams = np.zeros((n, N_IPARAMS), np.uint32)
    windows = []
    for i, (p, step, history) in enumerate(zip(params_list, steps, histories, strict=True)):
        if p.seed is None:
            raise InvalidInput(f"params_list[{i}].seed: None; resolve_seed() once per request")
        if p.logit_bias or p.ignore_eos:
            raise InvalidInput(f"params_list[{i}]: logit_bias / ignore_eos are not sampled on the GPU")
        if not 0 <= step < 2**32:
            raise InvalidInput(f"steps[{i}]: {step} outside [0, 2**32)")
        fparams[i] = (p.temperature, p.top_p, p.min_p, p.repetition_penalty, p.presence_penalty,
                      p.frequency_penalty)
        iparams[i] = (min(p.top_k, 2**32 - 1), p.seed & 0xFFFFFFFF, p.seed >> 32, step)
        last_n, history = p.penalty_last_n, list(history)
        start = 0 if last_n < 0 else max(len(history) - last_n, 0)
        windows.append(history[start:] if last_n else [])
    width = max([1, *(len(w) for w in windows)])
    window = np.zeros((n, width), np.int32)  # [n, width]
    for i, w in enumerate(windows):
        window[i, : len(w)] = w
    window_len = np.array([len(w) for w in windows], np.int32)
    return fparams, iparams, window, window_len


def copy_params(rt: Runtime, bufs: dict, host: tuple[np.ndarray, ...]) -> tuple:
    """Copy `pack_params`' arrays into the preallocated device buffers `bufs` (fparams, iparams, window,
    window_len: each with room for the rows; window for max_rows * max_width ids); returns device views."""
    fparams, iparams, window, window_len = host
    n, width = window.shape
    if n * width > bufs["window"].size:
        raise InvalidInput(f"histories: penalty windows of {width} ids x {n} rows exceed the buffer")
    views = (bufs["fparams"][:n], bufs["iparams"][:n], bufs["window"][: n * width].reshape(n, width),
             bufs["window_len"][:n])
    for dev, arr in zip(views, host, strict=True):
        cuda.memcpy_htod_async(dev.gpudata, np.ascontiguousarray(arr), rt.stream)
    return views
