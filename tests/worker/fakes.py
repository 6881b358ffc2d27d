"""Fakes for the scheduler's protocols: an engine that records its calls, generations that count."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gpu.errors import KVCacheFull

VOCAB = 16


@dataclass(frozen=True)
class Step:
    token_id: int | None
    text: str
    logprobs: object = None
    finish_reason: str | None = None
    error: str | None = None


class FakeEngine:
    """max_batch slots; logits row b is one-hot at (slot's length + first prompt id) % VOCAB."""

    def __init__(self, max_batch: int = 2, max_context: int = 32, n_slots: int | None = None) -> None:
        self.max_batch, self.max_context = max_batch, max_context
        self.free_slots = list(range(n_slots if n_slots is not None else max_batch))
        self.lengths: dict[int, int] = {}
        self.first: dict[int, int] = {}
        self.calls: list[tuple[str, list[int]]] = []
        self.fail_decode = 0  # raise on the next n decodes

    def alloc(self) -> int:
        if not self.free_slots:
            raise KVCacheFull("no free slot")
        slot = self.free_slots.pop(0)
        self.lengths[slot] = 0
        return slot

    def free(self, slot: int) -> None:
        del self.lengths[slot]
        self.free_slots.append(slot)

    def _logits(self, slots: list[int]) -> np.ndarray:
        out = np.zeros((len(slots), VOCAB), dtype=np.float32)  # [B, vocab]
        for b, slot in enumerate(slots):
            out[b, (self.lengths[slot] + self.first[slot]) % VOCAB] = 1.0
        return out

    def prefill(self, slots: list[int], prompts: list[list[int]]) -> np.ndarray:
        self.calls.append(("prefill", list(slots)))
        for slot, prompt in zip(slots, prompts, strict=True):
            self.lengths[slot] += len(prompt)
            self.first[slot] = prompt[0]
        return self._logits(slots)

    def decode(self, slots: list[int], token_ids: list[int]) -> np.ndarray:
        self.calls.append(("decode", list(slots)))
        if self.fail_decode:
            self.fail_decode -= 1
            raise RuntimeError("device lost")
        for slot in slots:
            self.lengths[slot] += 1
        return self._logits(slots)


class FakeGeneration:
    """Greedy over the row; text = letters; "length" after max_tokens; stop on token 15."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.ids: list[int] = []
        self.cancelled = False

    def step(self, row: np.ndarray) -> Step:
        token = int(np.argmax(row))
        self.ids.append(token)
        text = chr(ord("a") + token)
        if token == 15:
            return Step(token, "", finish_reason="stop")
        return Step(token, text, finish_reason="length" if len(self.ids) >= self.max_tokens else None)

    def cancel(self) -> Step:
        self.cancelled = True
        return Step(None, "~", finish_reason="cancelled")


@dataclass
class RecordingSink:
    log: list[tuple] = field(default_factory=list)

    def started(self, now: float) -> None:
        self.log.append(("started",))

    def step(self, result: Step, now: float) -> None:
        self.log.append(("step", result.token_id, result.text))

    def finished(self, finish_reason: str, completion_tokens: int, now: float) -> None:
        self.log.append(("finished", finish_reason, completion_tokens))

    def failed(self, exc: BaseException, now: float) -> None:
        self.log.append(("failed", type(exc).__name__, str(exc)))

    @property
    def tokens(self) -> list[int]:
        return [entry[1] for entry in self.log if entry[0] == "step" and entry[1] is not None]
