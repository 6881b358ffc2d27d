"""Decode steps queued one ahead: the GPU runs step k+1 while the host handles step k's tokens.

With an engine that has `launch_decode` (CUDA), `DecodeAhead.rows` queues the next step of the sequences
that go on, fed the tokens the current step picks (still on the device), before it reads the current
step's tokens; the host's work on them (stop checks, detokenising, publishing) then overlaps the GPU's
next step instead of leaving the GPU idle. A sequence that turns out to end at the current step (a stop
token, a stop string) has had one more step computed for it, which is discarded; one whose length ends it
is left out of the queued step. Sequences that start while a step is queued join the step after it.
Tokens are those of `decode_rows`: the same seeded picks (step index and parameters alike), only earlier.

Rows go the plain, waiting way (`decode_rows`) when the engine cannot launch, when `ORCD_DECODE_AHEAD=0`,
or while any row's tokens are sampled on the host (logprobs, logit bias). A fed row's penalty window
takes the token not yet read from the device (`CudaEngine.launch_decode`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .errors import SamplingError

Row = Any  # gpu.runner.Row: a token picked by the engine, a logits row, or its SamplingError


def feedable(generation: Any) -> bool:
    """True when the engine may pick this sequence's next tokens from a token it has not returned yet."""
    return bool(getattr(generation, "device_sampleable", False))


class DecodeAhead:
    """One decode step at a time for a changing batch, with the next step queued before a step's tokens
    are read: `rows` per step. A queued step left unread (the loop's end) is harmless: its slots are freed
    by their owners, and an engine error forgets it."""

    def __init__(self, engine: Any, enabled: bool | None = None):
        if enabled is None:
            enabled = os.environ.get("ORCD_DECODE_AHEAD", "1") != "0"
        self.engine = engine
        self.launch = getattr(engine, "launch_decode", None) if enabled else None
        self._queued: tuple[Any, list[tuple[int, Any]]] | None = None  # (pick, [(slot, generation)])

    def rows(self, slots: list[int], token_ids: list[int], generations: Sequence[Any],
             ) -> list[tuple[int, Row]]:
        """(index into the batch, its `Row`) for the rows of one step: every row of the batch, or, when a
        step was queued, that step's rows still in the batch (rows that joined since go in the next)."""
        try:
            return self._rows(slots, token_ids, generations)
        except BaseException:
            self._queued = None
            raise

    def _rows(self, slots, token_ids, generations) -> list[tuple[int, Row]]:
        queued, self._queued = self._queued, None
        batch = list(zip(slots, token_ids, generations, strict=True))
        if queued is None:
            if self.launch is None or not all(feedable(g) for g in generations):
                from .runner import decode_rows  # runner's loop uses this module

                return list(enumerate(decode_rows(self.engine, slots, token_ids, generations)))
            queued = self._launch([(slot, token, g, g.n_generated) for slot, token, g in batch])
        pick, launched = queued
        index = {id(g): i for i, g in enumerate(generations)}
        in_step = {id(g) for _, g in launched}
        go_on = [(slot, None, g, g.n_generated + 1) for slot, g in launched
                 if id(g) in index and not g.length_ends_next]
        joining = [(slot, token, g, g.n_generated) for slot, token, g in batch if id(g) not in in_step]
        after = go_on + joining
        if after and all(feedable(g) for _, _, g, _ in after):
            self._queued = self._launch(after)
        ids = pick.ids()
        out: list[tuple[int, Row]] = []
        for (_, g), token in zip(launched, ids.tolist(), strict=True):
            if id(g) in index:
                out.append((index[id(g)], int(token) if token >= 0 else SamplingError(
                    f"NaN/+inf logits or no finite logit to sample at step {g.n_generated}")))
        return out

    def _launch(self, rows: list[tuple[int, int | None, Any, int]]) -> tuple[Any, list[tuple[int, Any]]]:
        """Queue a step of rows (slot, token or None to feed the one picked last, generation, step index)."""
        gens = [g for _, _, g, _ in rows]
        pick = self.launch([slot for slot, _, _, _ in rows], [token for _, token, _, _ in rows],
                           [g.device_params for g in gens], [step for _, _, _, step in rows],
                           [g.history for g in gens], [g.banned_ids for g in gens])
        return pick, [(slot, g) for slot, _, g, _ in rows]
