"""The backend-neutral engine API and `load_engine`.

`Engine` owns the slot bookkeeping and validates every call the same way for every backend, then hands
the checked batch to the backend's `_prefill` / `_decode` / `_prefill_all`; a slot's length grows only
after the backend returns, so a failed step leaves every sequence as it was.

Contract for every backend: the logits of a sequence never depend on which other sequences share the
batch (batch invariance), and shapes are `[B, vocab]` float32 in the order of `slots`.
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BackendUnavailable, InvalidInput
from .kv_cache import SlotTable

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "numpy", "cuda")


class Engine(ABC):
    """A model loaded for inference with a KV cache of `max_batch` slots x `max_context` tokens."""

    backend: str = ""

    def __init__(self, config: Any, max_batch: int, max_context: int):
        if max_batch < 1 or max_context < 1:
            raise InvalidInput(f"max_batch ({max_batch}) and max_context ({max_context}) must be >= 1")
        limit = min(config.context_length, config.sliding_window or config.context_length)
        if max_context > limit:
            # beyond the sliding window (phi3) attention would need a window mask; no backend does one
            logger.info("max_context %d capped at the model's limit %d", max_context, limit)
            max_context = limit
        self.config = config
        self.max_batch = max_batch
        self.max_context = max_context
        self.slots = SlotTable(max_batch, max_context)

    # --- slots ---------------------------------------------------------------------------------
    def alloc(self) -> int:
        """A free KV slot, empty; `KVCacheFull` when all `max_batch` are in use."""
        return self.slots.alloc()

    def free(self, slot: int) -> None:
        self.slots.free(slot)

    def seq_len(self, slot: int) -> int:
        return self.slots.seq_len(slot)

    # --- forward -------------------------------------------------------------------------------
    def prefill(self, slots: Sequence[int], prompts: Sequence[Sequence[int]]) -> np.ndarray:
        """Append each prompt to its slot; logits [B, vocab] at each prompt's last position."""
        tokens = self._check_batch(slots, prompts, "prompts")
        starts = [self.slots.reserve(slot, len(t)) for slot, t in zip(slots, tokens, strict=True)]
        logits = self._prefill(list(slots), tokens, starts)
        for slot, t in zip(slots, tokens, strict=True):
            self.slots.commit(slot, len(t))
        return logits

    def decode(self, slots: Sequence[int], token_ids: Sequence[int]) -> np.ndarray:
        """Append one token to each slot; logits [B, vocab] for the next position."""
        tokens = self._check_batch(slots, [[t] for t in token_ids], "token_ids")
        starts = [self.slots.reserve(slot, 1) for slot in slots]
        logits = self._decode(list(slots), np.concatenate(tokens), starts)
        for slot in slots:
            self.slots.commit(slot, 1)
        return logits

    def prefill_all_logits(self, slot: int, prompt: Sequence[int]) -> np.ndarray:
        """Like `prefill` for one slot, but logits [T, vocab] at every position (teacher forcing)."""
        (tokens,) = self._check_batch([slot], [prompt], "prompt")
        start = self.slots.reserve(slot, len(tokens))
        logits = self._prefill_all(slot, tokens, start)
        self.slots.commit(slot, len(tokens))
        return logits

    @abstractmethod
    def close(self) -> None:
        """Release the backend's memory; the engine is unusable afterwards."""

    def warm_up(self) -> float:
        """Pay one-off costs (kernel loading, CUDA graph capture) now rather than in the first requests;
        the seconds it took. Nothing to do for a backend without such costs."""
        return 0.0

    # --- backend hooks (inputs already validated; do not touch the slot table) ----------------
    @abstractmethod
    def _prefill(self, slots: list[int], tokens: list[np.ndarray], starts: list[int]) -> np.ndarray:
        """[B, vocab] logits at each prompt's last token; tokens[i] goes at starts[i]..."""

    @abstractmethod
    def _decode(self, slots: list[int], token_ids: np.ndarray, starts: list[int]) -> np.ndarray:
        """[B, vocab] logits; token_ids [B] goes at position starts[i] of slots[i]."""

    @abstractmethod
    def _prefill_all(self, slot: int, tokens: np.ndarray, start: int) -> np.ndarray:
        """[T, vocab] logits at every position of tokens [T], written from `start`."""

    # --- validation ----------------------------------------------------------------------------
    def _check_batch(
        self, slots: Sequence[int], seqs: Sequence[Sequence[int]], what: str
    ) -> list[np.ndarray]:
        if len(slots) != len(seqs):
            raise InvalidInput(f"{len(slots)} slots but {len(seqs)} {what}")
        if not slots:
            raise InvalidInput(f"empty batch: no slots and no {what}")
        if len(set(slots)) != len(slots):
            raise InvalidInput(f"slots {list(slots)} name a slot more than once")
        out = []
        for slot, seq in zip(slots, seqs, strict=True):
            self.slots.check(slot)
            ids = np.asarray(seq, dtype=np.int64).reshape(-1)  # [T]
            if ids.size == 0:
                raise InvalidInput(f"slot {slot}: empty {what[:-1] if what.endswith('s') else what}")
            bad = (ids < 0) | (ids >= self.config.vocab_size)
            if bad.any():
                raise InvalidInput(
                    f"slot {slot}: token id {int(ids[bad][0])} outside [0, {self.config.vocab_size})"
                )
            out.append(ids)
        return out


def cuda_available() -> bool:
    """True when the CUDA backend imports (PyCUDA present) and sees at least one device."""
    try:
        cuda = importlib.import_module("gpu.cuda_engine")
        return cuda.device_count() > 0
    except Exception as exc:  # ImportError, or a driver that fails to initialise
        logger.debug("CUDA backend unavailable: %s", exc)
        return False


def load_engine(
    path: str | Path, backend: str = "auto", max_batch: int = 8, max_context: int = 2048, device: int = 0
) -> Engine:
    """Load the GGUF model at `path` on `backend`; "auto" takes CUDA when usable, else numpy."""
    if backend not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = "cuda" if cuda_available() else "numpy"
    logger.info(
        "loading %s on the %s backend (max_batch %d, max_context %d)", path, backend, max_batch, max_context
    )
    if backend == "numpy":
        from .numpy_engine import NumpyEngine

        return NumpyEngine.load(path, max_batch=max_batch, max_context=max_context)
    try:
        cuda = importlib.import_module("gpu.cuda_engine")
    except ImportError as exc:
        raise BackendUnavailable(f"the cuda backend cannot be imported: {exc}") from exc
    return cuda.CudaEngine.load(path, max_batch=max_batch, max_context=max_context, device=device)
