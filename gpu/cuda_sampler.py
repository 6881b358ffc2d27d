"""Tokens sampled on the device after a step (`gpu.ops.sample`'s kernels), with only ids coming back.

`DeviceSampler.queue` writes the ban rectangles into the logits, sends the packed parameters through pinned
staging (a pageable copy may wait for the stream, which would stall a host that runs ahead), samples, and
has the sampler kernel write the ids into one of `RING` mapped pinned buffers as well (no device-to-host
copy queued after it: 5-7 us a step less); it returns a `PendingPick` without waiting, so the host can queue
the next step before it reads this one's tokens. `pick` does the same into a buffer of its own and waits:
picks read at once never take a ring buffer from a queued one.
"""

from __future__ import annotations

import numpy as np
import pycuda.driver as cuda

from .errors import EngineError
from .ops.sample import copy_params, sample, sample_workspace
from .runtime import Runtime

RING = 4  # pinned id buffers: picks may be read up to RING - 1 later picks after their own
NEG_INF_F32 = 0xFF800000  # the bits of float32 -inf
_memset_2d = getattr(cuda, "memset_d2d32_async", None)  # cuMemsetD2D32Async: one call per ban rectangle


class PendingPick:
    """The ids of one queued pick; `ids()` waits for them."""

    def __init__(self, sampler: DeviceSampler, ticket: int, n: int, event: cuda.Event):
        self.sampler, self.ticket, self.n, self.event = sampler, ticket, n, event

    def ids(self) -> np.ndarray:
        """The picked ids [n] int32 (-1 for a row with NaN/+inf logits or no finite logit)."""
        if self.sampler.issued - self.ticket > RING:
            raise EngineError(f"pick {self.ticket} read after {RING} later picks reused its buffer")
        try:
            self.event.synchronize()
        except cuda.Error as exc:  # a failure of the step or its sampling, seen on the host only now
            raise EngineError(f"decode step of pick {self.ticket}: CUDA error: {exc}") from exc
        return self.sampler.host_ids[self.ticket % RING, : self.n].copy()


class DeviceSampler:
    """Device buffers, workspace and pinned staging to sample up to `max_rows` rows of `vocab` logits
    with penalty windows of up to `max_window` ids."""

    def __init__(self, rt: Runtime, max_rows: int, max_window: int, vocab: int):
        self.rt, self.vocab = rt, vocab
        i32 = np.int32
        self.bufs = {"fparams": rt.empty((max_rows, 6), np.float64, "sampling"),
                     "iparams": rt.empty((max_rows, 4), np.uint32, "sampling"),
                     "window": rt.empty((max_rows * max_window,), i32, "sampling"),
                     "window_len": rt.empty((max_rows,), i32, "sampling")}
        self.ids = rt.empty((max_rows,), i32, "sampling")  # the output of `pick`
        self.work = sample_workspace(rt, max_rows, vocab)
        self.sent: dict[str, np.ndarray] = {}  # copy_params: what bufs hold
        self.staged = {name: cuda.pagelocked_empty(buf.shape, buf.dtype) for name, buf in self.bufs.items()}
        mapped = cuda.host_alloc_flags.DEVICEMAP  # the sampler kernel writes the ids there itself
        self.host_ids = cuda.pagelocked_empty((RING, max_rows), i32, mem_flags=mapped)
        self.host_now = cuda.pagelocked_empty((max_rows,), i32, mem_flags=mapped)  # `pick`'s ids
        self._ring_at = int(self.host_ids.base.get_device_pointer())
        self._now_at = int(self.host_now.base.get_device_pointer())
        self.issued = 0  # picks queued so far
        # events made once, while the engine's context is current: a pick may be dropped on any thread
        self.done = [cuda.Event() for _ in range(RING)]  # after the sampler wrote each ring buffer
        self.done_now = cuda.Event()
        self._staged_sent = cuda.Event()  # after the last copy out of the staging
        self._staged_used = False

    def queue(self, logits, out, host: tuple[np.ndarray, ...], bans) -> PendingPick:
        """Sample logits [n, vocab] (device, penalised and banned in place) into out[:n] (int32, device)
        with `pack_params`' host arrays and `ban_rectangles`; the ids come back in the returned pick. A
        penalty-window entry -(j + 1) stands for out[j] as the last queued pick left it."""
        ticket = self.issued
        self.issued += 1
        at = self._ring_at + (ticket % RING) * self.host_ids.strides[0]
        event = self._sample(logits, out, host, bans, at, self.done[ticket % RING], fed=out)
        return PendingPick(self, ticket, logits.shape[0], event)

    def pick(self, logits, host: tuple[np.ndarray, ...], bans) -> np.ndarray:
        """`queue` into `self.ids`, waiting for the ids [n] int32 (-1: no token, as `PendingPick.ids`)."""
        self._sample(logits, self.ids, host, bans, self._now_at, self.done_now).synchronize()
        return self.host_now[: logits.shape[0]].copy()

    def _sample(self, logits, out, host, bans, host_at: int, done: cuda.Event, fed=None) -> cuda.Event:
        """Bans, parameters and the sampler kernels, which write out[:n] and the mapped host ids at device
        address host_at, queued; `done` recorded after them. fed: what negative penalty-window entries
        stand for."""
        n = logits.shape[0]
        stream = self.rt.stream
        pitch = 4 * self.vocab  # bytes per logits row
        for row, n_rows, token, width in bans:  # stream-ordered: after the step, before the sampler
            dest = int(logits.gpudata) + row * pitch + 4 * token
            if _memset_2d is not None:
                _memset_2d(dest, pitch, NEG_INF_F32, width, n_rows, stream)
            else:
                for r in range(n_rows):
                    cuda.memset_d32_async(dest + r * pitch, NEG_INF_F32, width, stream)
        views = copy_params(self.rt, self.bufs, self._stage(host), self.sent)
        self._staged_sent.record(stream)
        self._staged_used = True
        ids = out[:n]
        sample(self.rt, ids, logits, *views, self.work, fed=fed, host_ids=host_at)
        done.record(stream)
        return done

    def _stage(self, host: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        """`host` copied into the pinned staging, once the copies out of its last contents have left."""
        if self._staged_used:
            self._staged_sent.synchronize()
        out = []
        for name, arr in zip(("fparams", "iparams", "window", "window_len"), host, strict=True):
            view = self.staged[name].reshape(-1)[: arr.size].reshape(arr.shape)
            np.copyto(view, arr)
            out.append(view)
        return tuple(out)


def ban_rectangles(banned) -> list[tuple[int, int, int, int]]:
    """(first row, rows, first id, ids) rectangles that cover exactly each row's banned ids: rows in a
    run with the same set share them, consecutive ids share one (ignore_eos bans one set everywhere)."""
    out, row = [], 0
    while row < len(banned):
        ids = sorted(set(banned[row]))
        end = row + 1
        while end < len(banned) and sorted(set(banned[end])) == ids:
            end += 1
        i = 0
        while i < len(ids):
            j = i + 1
            while j < len(ids) and ids[j] == ids[j - 1] + 1:
                j += 1
            out.append((row, end - row, ids[i], j - i))
            i = j
        row = end
    return out
