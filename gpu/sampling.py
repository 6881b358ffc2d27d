"""Turning one request's logits into a token: llama.cpp's sampler chain with a counter-based random draw.

The chain, in llama.cpp's default order (``common_sampler``: logit-bias → penalties → top-k → top-p →
min-p → temperature → dist), each stage narrowing a candidate list sorted by logit:

1. logit bias: ``logit[id] += bias`` (``ignore_eos`` bans end-of-generation ids with ``-inf``);
2. penalties over the last ``penalty_last_n`` tokens of prompt + output (see ``apply_penalties``);
   with temperature 0 the token is now the argmax (lowest id among ties) and nothing is drawn;
3. top-k, 4. top-p, 5. min-p on the untempered logits;
6. temperature: ``logit / T``;
7. one uniform ``u = philox_uniform(seed, step)`` picks by inverse CDF.

The draw depends only on (seed, step), so a request's tokens never depend on its batch. The exact
definition, which the CUDA sampler reproduces, is in docs/sampling.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import SamplingError
from .params import SamplingParams

MASK32 = np.uint64(0xFFFFFFFF)
PHILOX_M0, PHILOX_M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)  # round multipliers
PHILOX_W0, PHILOX_W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)  # Weyl key increments
PHILOX_ROUNDS = 10


def philox4x32_10(counter: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Philox4x32-10 (Salmon et al. 2011, as Random123): counters [N, 4] and keys [N, 2] (or [2]) uint32
    → [N, 4] uint32. Ten rounds; the key is bumped by the Weyl constants between rounds."""
    ctr = np.asarray(counter, dtype=np.uint64).reshape(-1, 4)  # [N, 4]
    keys = np.broadcast_to(np.asarray(key, dtype=np.uint64), (ctr.shape[0], 2))  # [N, 2]
    c0, c1, c2, c3 = ctr.T
    k0, k1 = keys.T
    for r in range(PHILOX_ROUNDS):
        if r:
            k0 = (k0 + PHILOX_W0) & MASK32
            k1 = (k1 + PHILOX_W1) & MASK32
        p0 = PHILOX_M0 * c0  # < 2**64: exact 32x32 → 64-bit product
        p1 = PHILOX_M1 * c2
        hi0, lo0, hi1, lo1 = p0 >> np.uint64(32), p0 & MASK32, p1 >> np.uint64(32), p1 & MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return np.stack([c0, c1, c2, c3], axis=1).astype(np.uint32)  # [N, 4]


def philox_uniform(seed: int, step: int) -> float:
    """The draw for a request's ``step``-th sampled token: in [0, 1), a multiple of 2**-24.

    key = (seed & 0xFFFFFFFF, seed >> 32), counter = (step, 0, 0, 0), u = (x0 >> 8) * 2**-24.
    """
    if not 0 <= seed < 2**64:
        raise SamplingError(f"seed {seed} outside [0, 2**64)")
    if not 0 <= step < 2**32:
        raise SamplingError(f"step {step} outside [0, 2**32)")
    x = philox4x32_10([step, 0, 0, 0], [seed & 0xFFFFFFFF, seed >> 32])
    return int(x[0, 0] >> 8) * 2.0**-24


def apply_penalties(logits: np.ndarray, window: Sequence[int], repeat: float, presence: float,
                    frequency: float) -> None:
    """llama.cpp's penalties, in place, for each distinct id with count c > 0 in ``window``:
    ``l = l * repeat if l <= 0 else l / repeat``, then ``l -= c * frequency + presence``."""
    if not len(window) or (repeat == 1.0 and presence == 0.0 and frequency == 0.0):
        return
    ids, counts = np.unique(np.asarray(window, dtype=np.int64), return_counts=True)
    ids, counts = ids[ids < logits.shape[0]], counts[ids < logits.shape[0]]
    vals = logits[ids]
    vals = np.where(vals <= 0, vals * repeat, vals / repeat)
    logits[ids] = vals - counts * frequency - presence


def sorted_candidates(logits: np.ndarray, top_k: int) -> np.ndarray:
    """Ids by logit descending, ties by id ascending, ``-inf`` dropped; only the first ``top_k`` if > 0."""
    vocab = logits.shape[0]
    if 0 < top_k < vocab:
        part = np.argpartition(logits, vocab - top_k)[vocab - top_k :]  # the top_k largest: 4x faster than
        # selecting the smallest of -logits (no negated copy; numpy's introselect is quicker this way)
        threshold = logits[part].min()
        above = np.flatnonzero(logits > threshold)
        ties = np.flatnonzero(logits == threshold)[: top_k - above.shape[0]]
        ids = np.concatenate([above, ties])
    else:
        ids = np.arange(vocab)
    ids = ids[np.lexsort((ids, -logits[ids]))]  # [n] best first
    return ids[np.isfinite(logits[ids])]


def top_p_keep(cand_logits: np.ndarray, top_p: float) -> int:
    """How many of the sorted candidates top-p keeps: the shortest prefix whose mass reaches ``top_p``."""
    if top_p >= 1.0:
        return cand_logits.shape[0]
    probs = np.exp(cand_logits - cand_logits[0])
    cum = np.cumsum(probs / probs.sum())
    return min(int(np.searchsorted(cum, top_p, side="left")) + 1, cand_logits.shape[0])


def min_p_keep(cand_logits: np.ndarray, min_p: float) -> int:
    """How many sorted candidates have p >= min_p * p_max, i.e. logit >= max_logit + ln(min_p)."""
    if min_p <= 0.0:
        return cand_logits.shape[0]
    return max(int(np.count_nonzero(cand_logits >= cand_logits[0] + np.log(min_p))), 1)


def draw(cand_logits: np.ndarray, u: float) -> int:
    """Index of the candidate the uniform ``u`` selects: the first with cumulative weight > u * total."""
    weights = np.exp(cand_logits - cand_logits[0])  # [n], candidate 0 has weight 1
    cum = np.cumsum(weights)
    return min(int(np.searchsorted(cum, u * cum[-1], side="right")), cand_logits.shape[0] - 1)


@dataclass(frozen=True)
class TokenLogprobs:
    """Log-probability of the chosen token and the top-n alternatives under the model's raw logits."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]  # (id, logprob), best first, ties by id


def token_logprobs(logits: np.ndarray, token_id: int, n: int) -> TokenLogprobs:
    """``log_softmax`` of the raw logits (before bias, penalties and temperature), in float64."""
    row = logits.astype(np.float64)
    peak = row.max()
    logp = row - (peak + np.log(np.exp(row - peak).sum()))  # [vocab]
    top = sorted_candidates(logp, n)[:n] if n else np.empty(0, dtype=np.int64)
    return TokenLogprobs(token_id, float(logp[token_id]), tuple((int(i), float(logp[i])) for i in top))


class Sampler:
    """One request's sampler: the chain above with ``params``; ``sample`` is a pure function of
    (logits row, token history, step) and the seed."""

    def __init__(self, params: SamplingParams, eog_ids: Sequence[int] = ()) -> None:
        self.params = params.resolve_seed()
        self.seed: int = self.params.seed  # type: ignore[assignment]
        bias = {int(k): float(v) for k, v in self.params.logit_bias.items()}
        if self.params.ignore_eos:
            bias.update({int(i): -np.inf for i in eog_ids})
        self._bias_ids = np.fromiter(bias.keys(), dtype=np.int64, count=len(bias))
        self._bias_values = np.fromiter(bias.values(), dtype=np.float64, count=len(bias))

    def sample(self, logits: np.ndarray, history: Sequence[int], step: int) -> int:
        """Token id for ``logits`` ([vocab] float) after ``history`` (prompt + output so far)."""
        p = self.params
        if logits.ndim != 1:
            raise SamplingError(f"logits must be one row [vocab], got shape {logits.shape}")
        row = logits.astype(np.float64)  # [vocab], a copy the stages edit in place
        if not (row < np.inf).all():
            raise SamplingError(f"logits contain NaN or +inf at step {step}")
        if self._bias_ids.size:
            if self._bias_ids.max() >= row.shape[0]:
                raise SamplingError(f"logit_bias id {int(self._bias_ids.max())} >= vocab {row.shape[0]}")
            row[self._bias_ids] += self._bias_values
        if p.penalty_last_n:
            start = 0 if p.penalty_last_n < 0 else max(len(history) - p.penalty_last_n, 0)
            apply_penalties(row, history[start:], p.repetition_penalty, p.presence_penalty,
                            p.frequency_penalty)
        if p.greedy:
            best = int(np.argmax(row))
            if row[best] == -np.inf:
                raise SamplingError(f"no finite logit left to pick at step {step}")
            return best
        cand = sorted_candidates(row, p.top_k)  # [n] ids, best first
        if cand.size == 0:
            raise SamplingError(f"no finite logit left to sample at step {step}")
        cand_logits = row[cand]
        cand_logits = cand_logits[: top_p_keep(cand_logits, p.top_p)]
        cand_logits = cand_logits[: min_p_keep(cand_logits, p.min_p)]
        return int(cand[draw(cand_logits / p.temperature, philox_uniform(self.seed, step))])
