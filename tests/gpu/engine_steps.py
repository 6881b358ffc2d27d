"""Shared by the CUDA engine tests that compare two configurations bit for bit."""

from __future__ import annotations

import numpy as np


def greedy_logits(engine, prompts: list[list[int]], steps: int) -> np.ndarray:
    """Logits [1 + steps, batch, vocab] of prefilling `prompts` on fresh slots and then `steps` decode
    steps, each row fed its own argmax."""
    slots = [engine.alloc() for _ in prompts]
    logits = [engine.prefill(slots, prompts)]
    for _ in range(steps):
        logits.append(engine.decode(slots, logits[-1].argmax(axis=1).tolist()))
    return np.stack(logits)
