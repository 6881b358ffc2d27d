"""KV slots: which slots are in use and how long each sequence is (`SlotTable`, backend-neutral),
and the numpy storage for the keys and values of every slot (`KVCache`).

A slot holds one sequence. Its length grows only when a forward step commits, so a step that fails
half-way leaves the sequence as it was.
"""

from __future__ import annotations

import logging

import numpy as np

from .errors import ContextOverflow, KVCacheFull, UnknownSlot

logger = logging.getLogger(__name__)


class SlotTable:
    """Allocation and lengths of `n_slots` sequences of at most `max_context` tokens each."""

    def __init__(self, n_slots: int, max_context: int):
        self.n_slots = n_slots
        self.max_context = max_context
        self._lengths: dict[int, int] = {}  # allocated slot -> tokens in its cache

    def alloc(self) -> int:
        """The lowest free slot, now empty; `KVCacheFull` when all are in use."""
        for slot in range(self.n_slots):
            if slot not in self._lengths:
                self._lengths[slot] = 0
                logger.debug("slot %d allocated", slot)
                return slot
        raise KVCacheFull(f"all {self.n_slots} KV slots are in use; free one first")

    def free(self, slot: int) -> None:
        self.check(slot)
        del self._lengths[slot]
        logger.debug("slot %d freed", slot)

    def check(self, slot: int) -> None:
        if slot not in self._lengths:
            raise UnknownSlot(f"slot {slot} is not allocated (allocated: {sorted(self._lengths)})")

    def seq_len(self, slot: int) -> int:
        self.check(slot)
        return self._lengths[slot]

    def in_use(self) -> int:
        return len(self._lengths)

    def reserve(self, slot: int, n_new: int) -> int:
        """Check that `n_new` tokens fit after the slot's current length; return that length."""
        start = self.seq_len(slot)
        if start + n_new > self.max_context:
            raise ContextOverflow(
                f"slot {slot}: {start} cached + {n_new} new tokens exceed max_context {self.max_context}"
            )
        return start

    def commit(self, slot: int, n_new: int) -> None:
        self._lengths[slot] = self.reserve(slot, n_new) + n_new


class KVCache:
    """Preallocated float32 keys and values `[n_layers, n_slots, n_kv_heads, max_context, head_dim]`.

    Allocated with np.zeros, so the OS hands out pages only as sequences grow into them.
    """

    def __init__(self, n_layers: int, n_slots: int, n_kv_heads: int, max_context: int, head_dim: int):
        shape = (n_layers, n_slots, n_kv_heads, max_context, head_dim)
        self.k = np.zeros(shape, dtype=np.float32)
        self.v = np.zeros(shape, dtype=np.float32)

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def write(self, layer: int, slot: int, start: int, k: np.ndarray, v: np.ndarray) -> None:
        """Store k, v [T, n_kv_heads, head_dim] at positions start .. start+T-1."""
        end = start + k.shape[0]
        self.k[layer, slot, :, start:end] = k.transpose(1, 0, 2)  # [n_kv, T, hd]
        self.v[layer, slot, :, start:end] = v.transpose(1, 0, 2)

    def view(self, layer: int, slot: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Keys and values of positions 0 .. end-1, each [n_kv_heads, end, head_dim] (views)."""
        return self.k[layer, slot, :, :end], self.v[layer, slot, :, :end]
