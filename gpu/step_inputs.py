"""A step's inputs (token ids, positions, slots, last rows): pinned host rows [4, rows] and their copy into
the forward's device inputs, which every captured graph reads.

A decode step's copy goes early where it can: on a side stream, as soon as the last decode step queued
(the inputs' last reader) is done, so it overlaps the sampler work queued after that step instead of
standing on the engine's stream between the sampler and the next graph (~11 µs a step at batch 1 and 8 on
an H200, bench/step_overhead.py). Any other step (prefill, warm-up), and a decode step after one,
copies on the engine's stream. `ORCD_EARLY_INPUTS=0` copies every step on the engine's stream (an A/B
switch for benchmarks).
"""

from __future__ import annotations

import os

import numpy as np
import pycuda.driver as cuda

ENV_EARLY = "ORCD_EARLY_INPUTS"


class StepInputs:
    """The host inputs of one engine and their copies to `forward.inputs` (context current when used)."""

    def __init__(self, rt, forward):
        self.rt, self.forward = rt, forward
        self.host = cuda.pagelocked_empty((4, forward.rows), np.int32)  # ids, pos, slots, last rows
        self.early = os.environ.get(ENV_EARLY, "1") != "0"
        self._side = cuda.Stream()  # early copies (a stream is cheap; `early` may be switched later)
        self._sent: cuda.Event | None = None  # after the last copy out of `host`
        self._read: cuda.Event | None = None  # after the last decode step, if no other step read since
        self.early_copies = 0  # copies sent on the side stream so far (tests, benchmarks)

    def buffer(self) -> np.ndarray:
        """The host inputs, once the copy of their last contents has left them."""
        if self._sent is not None:
            self._sent.synchronize()
        return self.host

    def send(self, decode: bool = False) -> None:
        """Queue the copy of the host inputs for the step queued next; `decode`: that step is a decode
        step, whose copy may go early (see the module doc)."""
        sent = cuda.Event(cuda.event_flags.DISABLE_TIMING)
        if decode and self._read is not None:
            self._side.wait_for_event(self._read)
            cuda.memcpy_htod_async(self.forward.inputs.gpudata, self.host, self._side)
            sent.record(self._side)
            self.rt.stream.wait_for_event(sent)
            self.early_copies += 1
        else:
            self.forward.set_inputs(self.host)
            sent.record(self.rt.stream)
        self._sent, self._read = sent, None

    def decode_queued(self) -> None:
        """A decode step that read the inputs was just queued: the next decode step's copy may start once
        it is done."""
        if self.early:
            self._read = cuda.Event(cuda.event_flags.DISABLE_TIMING)
            self._read.record(self.rt.stream)
