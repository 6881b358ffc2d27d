"""The CUDA backend of the engine API: the forward pass in PyCUDA kernels (`gpu/kernels`).

`CudaEngine.load(path)` refuses before loading when the weights, KV cache and scratch would not fit ("needs X
GiB, Y GiB free"), uploads the weights (Q8_0 matrices as Q8_0, the rest dequantised to f16 or bf16 device
buffers: `gpu.cuda_weights`), and logs the load time and bytes per parameter. Prefill packs runs of short
prompts into one pass each and runs longer ones alone in chunks of `PREFILL_CHUNK` tokens
(`gpu.prefill_plan`), both padded to a row bucket whose CUDA graph is captured on first use; decode runs the
whole batch in one step, padded to a bucket size whose CUDA graph is captured on first use. `prefill_mixed`
picks each prompt's first token on the GPU as `decode_mixed` does for later ones. KV slot `max_batch` is a
scratch slot that the padding rows write to. `decode_greedy`, `decode_sample` and `decode_mixed` pick tokens
on the GPU (only ids come back; `decode_mixed` also returns the logits of rows left to the host sampler).
After `load` the context is current on no thread: each call pushes it (`rt.activate`), so the thread that
drives the engine may be another than the loader's, and `close` on that thread destroys it. Only this module
and what it imports touch PyCUDA.
"""

from __future__ import annotations

import logging
import os
import time
from functools import partial
from pathlib import Path

import numpy as np
import pycuda.driver as cuda

from .cuda_forward import CudaForward, pack_splits
from .cuda_graphs import DecodeGraphs, GraphError
from .cuda_sampler import DeviceSampler, PendingPick, ban_rectangles
from .cuda_weights import DeviceWeights, device_bytes, load_device_weights
from .engine import Engine
from .errors import EngineError, InvalidInput, OutOfMemory, SamplingError
from .ops.argmax import argmax, ids_from_packed
from .ops.attention_decode import DIRECT_CTX, DIRECT_TIERS, n_splits
from .ops.sample import pack_params
from .params import SamplingParams
from .prefill_plan import pack_bucket, pack_buckets, packable, plan_prefill
from .runtime import Runtime, device_count
from .step_inputs import StepInputs

logger = logging.getLogger(__name__)

__all__ = ["CudaEngine", "device_count"]

PREFILL_CHUNK = 512  # tokens per prefill forward (longer prompts run in several)
BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
ENV_DIRECT = "ORCD_DIRECT_ATTENTION"  # "0": decode always takes the two-pass attention (an A/B switch)
DIRECT_MAX_BATCH = 8  # buckets above take the two-pass attention (one-pass measured slower at 64 rows)


def direct_limit(bucket: int) -> int:
    """Positions below which a decode step of `bucket` rows takes the one-pass attention: its n_heads x rows
    blocks each cover the whole context, so few rows want short contexts (H100, Qwen2.5-0.5B shape: one
    row faster up to 128 positions and slower from 192, eight rows faster up to 511)."""
    return min(DIRECT_CTX, 128 * bucket)


def direct_tiers(bucket: int) -> tuple[int, ...]:
    """The one-pass forms (DIRECT_TIERS: the positions each covers) a bucket's steps may take below its
    `direct_limit`, smallest first; a step takes the first that covers its positions."""
    limit = direct_limit(bucket)
    return tuple(t for t in DIRECT_TIERS if t < limit) + (next(t for t in DIRECT_TIERS if t >= limit),)


class CudaEngine(Engine):
    backend = "cuda"

    def __init__(self, config, rt: Runtime, weights: DeviceWeights, max_batch: int, max_context: int,
                 use_graphs: bool = True):
        super().__init__(config, max_batch, max_context)
        self.rt = rt
        self.weights = weights
        self.scratch_slot = max_batch
        self.buckets = sorted({b for b in BUCKETS if b < max_batch} | {max_batch})
        self.forward = CudaForward(rt, config, weights, max_batch + 1, self.max_context, max_batch,
                                   PREFILL_CHUNK)
        self.inputs = StepInputs(rt, self.forward)  # pinned host inputs [4, rows] and their copies
        self.host_logits = cuda.pagelocked_empty((max_batch, config.vocab_size), np.float32)
        self.host_best = cuda.pagelocked_empty((max_batch,), np.uint64)
        self.sampler = DeviceSampler(rt, max_batch, self.max_context, config.vocab_size)
        self._fed: dict[int, int] = {}  # slot -> its row in the last launch_decode (its token in forward.fed)
        self._greedy = False  # decode_greedy: return argmax ids instead of logits
        self._sample_host = None  # decode_sample: pack_params' arrays for this step
        self._bans: list[tuple[int, int, int, int]] = []  # decode_mixed: ban_rectangles set to -inf
        self._keep_logits = False  # decode_mixed: copy the raw logits to host_logits too
        # small steps whose positions are all below direct_limit take the one-pass attention (own graphs)
        self.direct_attention = os.environ.get(ENV_DIRECT, "1") != "0"
        self.graphs = None
        if use_graphs:
            try:
                self.graphs = DecodeGraphs(rt.stream.handle)
            except ImportError as exc:
                logger.warning("cuda-bindings missing (%s): decode launches kernels one by one", exc)
        self.load_seconds = 0.0

    @classmethod
    def load(cls, path: str | Path, max_batch: int = 8, max_context: int = 2048, device: int = 0,
             dtype: str = "f16", use_graphs: bool = True) -> CudaEngine:
        from gguf_loader.arch import ModelConfig
        from gguf_loader.reader import open_gguf

        t0 = time.perf_counter()
        rt = Runtime(device, dtype)
        try:
            with open_gguf(path) as gguf:
                config = ModelConfig.from_gguf(gguf)
                ctx = min(max_context, config.context_length)
                need = estimate_bytes(gguf, config, rt.operand.itemsize, max_batch, ctx)
                rt.check_fits(need, f"{Path(path).name} ({config.arch}, batch {max_batch} x context {ctx})")
                weights = load_device_weights(rt, gguf, config, ctx)
            engine = cls(config, rt, weights, max_batch, max_context, use_graphs)
        except BaseException:
            rt.close()
            raise
        rt.synchronize()
        if cuda.Context.get_current() == rt.context:
            cuda.Context.pop()  # current on no thread: every use pushes it (rt.activate), so any thread may
            # drive the engine and close it, and no thread's PyCUDA context stack holds it at exit
        engine.load_seconds = time.perf_counter() - t0
        logger.info("%s loaded on %s in %.2f s: %s, %.2f bytes/parameter (weights)", path, rt.name,
                    engine.load_seconds, rt.memory_report(), rt.allocated["weights"] / weights.n_params)
        return engine

    def decode_greedy(self, slots: list[int], token_ids: list[int]) -> np.ndarray:
        """`decode`, but each row's argmax token id [B] int64 (picked on the GPU) instead of logits:
        greedy generation without copying [B, vocab] logits to the host."""
        self._greedy = True
        try:
            return self.decode(slots, token_ids)
        finally:
            self._greedy = False

    def decode_sample(self, slots: list[int], token_ids: list[int], params_list, steps: list[int],
                      histories: list[list[int]]) -> np.ndarray:
        """`decode`, then each row's token [B] int32 sampled on the GPU as `Sampler(params).sample(logits,
        history, step)` would (docs/sampling.md): histories[i] is prompt + output so far, steps[i] the index
        of the token being sampled; seeds must be resolved; logit bias and ignore_eos are refused."""
        ids = self._sampled(lambda: self.decode(slots, token_ids), slots, params_list, steps, histories, None,
                            False)
        bad = np.flatnonzero(ids < 0)
        if bad.size:
            bad_slots = [slots[i] for i in bad]
            raise SamplingError(f"slots {bad_slots}: NaN/+inf logits or no finite logit to sample")
        return ids

    def decode_mixed(self, slots: list[int], token_ids: list[int], params_list, steps: list[int],
                     histories: list[list[int]], banned: list[tuple[int, ...]] | None = None,
                     ) -> tuple[np.ndarray, np.ndarray | None]:
        """`decode_sample` for a batch where params_list[i] None marks a row the caller samples on the host:
        returns (ids [B] int32, -1 for host rows and for rows with NaN/+inf or no finite logit; the raw
        logits [B, vocab] f32 as `decode` returns them when any row is None, else None). banned[i]: ids
        set to -inf before row i is sampled (ignore_eos), as the host sampler's -inf bias does."""
        step = lambda: self.decode(slots, token_ids)  # noqa: E731
        return self._mixed(step, slots, params_list, steps, histories, banned)

    def prefill_mixed(self, slots: list[int], prompts: list[list[int]], params_list, steps: list[int],
                      histories: list[list[int]], banned: list[tuple[int, ...]] | None = None,
                      ) -> tuple[np.ndarray, np.ndarray | None]:
        """`prefill`, then each prompt's next token picked as `decode_mixed` picks it (histories[i] is the
        prompt, steps[i] 0 for a first token): the first tokens without [B, vocab] logits to the host."""
        step = lambda: self.prefill(slots, prompts)  # noqa: E731
        return self._mixed(step, slots, params_list, steps, histories, banned)

    def _mixed(self, run_step, slots, params_list, steps, histories, banned):
        stand_in = SamplingParams(temperature=0.0, penalty_last_n=0, seed=0)  # a host row: ids ignored
        host_rows = [i for i, p in enumerate(params_list) if p is None]
        params = [stand_in if p is None else p for p in params_list]
        hists = [[] if p is None else h for p, h in zip(params_list, histories, strict=True)]
        ids = self._sampled(run_step, slots, params, steps, hists, banned, bool(host_rows))
        ids[host_rows] = -1
        return ids, (self.host_logits[: len(slots)].copy() if host_rows else None)

    def launch_decode(self, slots: list[int], token_ids: list[int | None], params_list, steps: list[int],
                      histories: list[list[int]], banned: list[tuple[int, ...]] | None = None) -> PendingPick:
        """Queue one `decode_sample` step and return without waiting: the pick's `ids()` waits for its
        tokens. token_ids[i] None feeds slots[i] the token that the last launched step picked for it, still
        on the device, so the next step can be queued before this one's tokens are read and the host's work
        on them overlaps the GPU's next step; histories[i] of a fed row ends before that token (its penalty
        window takes it from the device). The slots' lengths grow at once: a step launched past a
        sequence's end (a stop token seen only when its pick is read) writes a position nobody reads; free
        the slot as usual."""
        n = len(slots)
        if len(token_ids) != n:
            raise InvalidInput(f"{n} slots but {len(token_ids)} token_ids")
        fed = {}
        for i, (slot, token) in enumerate(zip(slots, token_ids, strict=True)):
            if token is None:
                if slot not in self._fed:
                    raise InvalidInput(f"slot {slot}: nothing to feed (the last launched step picked no "
                                       "token for it)")
                fed[i] = self._fed[slot]
        if len(histories) != n:
            raise InvalidInput(f"{n} slots but {len(histories)} histories")
        histories = [[*h, -(fed[i] + 1)] if i in fed else h for i, h in enumerate(histories)]
        host, bans = self._sample_inputs(slots, params_list, steps, histories, banned)
        tokens = self._check_batch(slots, [[0 if t is None else t] for t in token_ids], "token_ids")
        starts = [self.slots.reserve(slot, 1) for slot in slots]
        with self.rt.activate(), _engine_errors("decode", slots):
            ids = [-(fed[i] + 1) if i in fed else int(t[0]) for i, t in enumerate(tokens)]
            self._decode_step(slots, ids, starts)
            pick = self.sampler.queue(self.forward.logits[:n], self.forward.fed, host, bans)
        for slot in slots:
            self.slots.commit(slot, 1)
        self._fed = {slot: i for i, slot in enumerate(slots)}
        return pick

    def free(self, slot: int) -> None:
        super().free(slot)
        self._fed.pop(slot, None)

    def _sample_inputs(self, slots, params_list, steps, histories, banned):
        """Checked `pack_params` arrays and `ban_rectangles` for sampling the rows of `slots`."""
        host = pack_params(params_list, steps, histories)
        if len(params_list) != len(slots):
            raise InvalidInput(f"{len(slots)} slots but {len(params_list)} params")
        if banned is not None and len(banned) != len(slots):
            raise InvalidInput(f"{len(slots)} slots but {len(banned)} banned-id lists")
        bad = [t for ids in banned or () for t in ids if not 0 <= t < self.config.vocab_size]
        if bad:
            raise InvalidInput(f"banned id {bad[0]} outside [0, {self.config.vocab_size})")
        return host, ban_rectangles(banned or [])

    def _sampled(self, run_step, slots, params_list, steps, histories, banned, keep_logits):
        """run_step (a `decode` or `prefill` of `slots`) with its tokens sampled on the GPU by `_pick`."""
        host, bans = self._sample_inputs(slots, params_list, steps, histories, banned)
        self._sample_host, self._bans, self._keep_logits = host, bans, keep_logits
        try:
            return run_step()
        finally:
            self._sample_host, self._bans, self._keep_logits = None, [], False

    # --- backend hooks -------------------------------------------------------------------------------
    def _prefill(self, slots: list[int], tokens: list[np.ndarray], starts: list[int]) -> np.ndarray:
        n = len(slots)
        self._forget_fed(slots)
        with self.rt.activate(), _engine_errors("prefill", slots):
            for batch in plan_prefill([len(t) for t in tokens], starts, self.forward.rows):
                i = batch[0]
                if packable(len(tokens[i]), starts[i], self.forward.rows):
                    self._prefill_pack(batch, slots, tokens, starts)
                    continue
                n_last = [n for n in self._chunks(slots[i], tokens[i], starts[i])][-1]
                self.forward.keep_last(n_last - 1, i)  # the last chunk's last row
            self.forward.head_last(n)
            return self._pick(n)  # [B, vocab] logits, or the tokens picked on the GPU

    def _prefill_all(self, slot: int, tokens: np.ndarray, start: int) -> np.ndarray:
        self._forget_fed([slot])
        out = []
        with self.rt.activate(), _engine_errors("prefill", [slot]):
            for n in self._chunks(slot, tokens, start):
                logits = self.forward.head_all(n)
                host = np.empty(logits.shape, np.float32)  # [n, vocab]
                cuda.memcpy_dtoh_async(host, logits.gpudata, self.rt.stream)
                self.rt.synchronize()
                out.append(host)
        return np.concatenate(out) if len(out) > 1 else out[0]  # [T, vocab]

    def _decode(self, slots: list[int], token_ids: np.ndarray, starts: list[int]) -> np.ndarray:
        self._forget_fed(slots)
        with self.rt.activate(), _engine_errors("decode", slots):
            self._decode_step(slots, token_ids, starts)
            return self._pick(len(slots))

    def _decode_step(self, slots, ids, starts) -> None:
        """Queue one decode step (context current): inputs ids / starts / slots, padded to the batch bucket
        with rows of token 0 at position 0 of the scratch slot, then the bucket's graph; the one-pass
        attention's graph (the smallest of `direct_tiers` that covers them) when every position is below
        `direct_limit` and the bucket is small."""
        n = len(slots)
        bucket = next(b for b in self.buckets if b >= n)
        inputs = self.inputs.buffer()
        inputs[:3, :bucket] = [[0], [0], [self.scratch_slot]]
        inputs[0, :n], inputs[1, :n], inputs[2, :n] = ids, starts, slots
        self.inputs.send(decode=True)
        last = max(starts)
        direct = self._direct(bucket) and last < direct_limit(bucket)
        self._replay_decode(bucket, next(t for t in direct_tiers(bucket) if last < t) if direct else 0)
        self.inputs.decode_queued()

    def _direct(self, bucket: int) -> bool:
        """Whether short-context steps of this bucket take the one-pass attention."""
        return self.direct_attention and bucket <= DIRECT_MAX_BATCH

    def _replay_decode(self, bucket: int, direct_ctx: int) -> None:
        """The decode step's graph: two-pass attention (direct_ctx 0) or the one-pass form of that tier."""
        what = f"decode step for batch {bucket}" + (f" (one-pass attention, {direct_ctx})" * bool(direct_ctx))
        key = ("direct", bucket, direct_ctx) if direct_ctx else bucket
        self._replay(key, partial(self.forward.decode, bucket, direct_ctx), what)

    def _forget_fed(self, slots: list[int]) -> None:
        """These slots move on without launch_decode: the tokens it picked for them are no longer theirs."""
        for slot in slots:
            self._fed.pop(slot, None)

    def _pick(self, n: int) -> np.ndarray:
        """After a step that left next-token logits in forward.logits[:n] (stream-ordered): what the call
        asked for: argmax ids [n] (decode_greedy), sampled ids [n] (the _sampled calls), else logits
        [n, vocab] on the host."""
        logits = self.forward.logits[:n]
        if self._greedy:
            argmax(self.rt, self.forward.best[:n], logits)
            cuda.memcpy_dtoh_async(self.host_best[:n], self.forward.best.gpudata, self.rt.stream)
            self.rt.synchronize()
            return ids_from_packed(self.host_best[:n])
        if self._sample_host is not None:
            if self._keep_logits:  # raw logits for host-sampled rows, before the kernel edits them
                cuda.memcpy_dtoh_async(self.host_logits[:n], logits.gpudata, self.rt.stream)
            return self.sampler.pick(logits, self._sample_host, self._bans)
        host = self.host_logits[:n]
        cuda.memcpy_dtoh_async(host, logits.gpudata, self.rt.stream)
        self.rt.synchronize()
        return host.copy()

    def warm_up(self) -> float:
        """Capture the graphs of every prefill row bucket (lone-prompt chunks and packed passes) and decode
        batch bucket, all on the scratch slot (no sequence's cache is touched)."""
        t0 = time.perf_counter()
        scratch = self.scratch_slot
        with self.rt.activate(), _engine_errors("warm-up", [scratch]):
            for rows in pack_buckets(self.forward.rows):  # lone-prompt chunks of every bucket that fits
                if rows <= self.max_context:
                    for _ in self._chunks(scratch, np.zeros(rows, np.int64), 0):
                        pass
            for bucket in pack_buckets(self.forward.rows):
                inputs = self.inputs.buffer()
                inputs[:3, :bucket] = [[0], [0], [scratch]]
                self.inputs.send()
                self._run_packed(bucket)
            for bucket in self.buckets:
                inputs = self.inputs.buffer()
                inputs[:3, :bucket] = [[0], [0], [scratch]]
                self.inputs.send()
                for direct_ctx in (0, *direct_tiers(bucket)) if self._direct(bucket) else (0,):
                    self._replay_decode(bucket, direct_ctx)
            self.rt.synchronize()
        seconds = time.perf_counter() - t0
        logger.info("warm-up: graphs for prefill of %s rows and decode of batch %s captured in %.2f s",
                    ",".join(map(str, pack_buckets(self.forward.rows))), ",".join(map(str, self.buckets)),
                    seconds)
        return seconds

    def _replay(self, key, run, what: str, capture: bool = True) -> None:
        """Launch key's CUDA graph when it is captured; else `run()` eagerly (the first run of a shape also
        loads its kernels) and, with `capture`, capture it for the next time."""
        if self.graphs is not None and key in self.graphs:
            self.graphs.launch(key)
            return
        run()
        if self.graphs is not None and capture:
            self._capture(key, run, what)

    def _capture(self, key, enqueue, what: str) -> None:
        try:
            with self.rt.programmatic():  # kernels overlap their predecessors' tails inside the graph
                self.graphs.capture(key, enqueue, what)
        except GraphError as exc:
            logger.warning("CUDA graphs off, decode launches kernels one by one: %s", exc)
            self.graphs = None

    def _prefill_pack(self, batch: range, slots, tokens, starts) -> None:
        """One packed pass over the prompts batch[0].. (context on), padded to its row bucket (rows of
        token 0 at position 0 of the scratch slot) and replayed as that bucket's CUDA graph; their last
        rows to x_last[batch]."""
        inputs, row = self.inputs.buffer(), 0
        for k, i in enumerate(batch):
            n = len(tokens[i])
            inputs[0, row : row + n] = tokens[i]
            inputs[1, row : row + n] = np.arange(starts[i], starts[i] + n)
            inputs[2, row : row + n] = slots[i]
            inputs[3, k] = row + n - 1
            row += n
        bucket = pack_bucket(row, self.forward.rows)
        inputs[:3, row:bucket] = [[0], [0], [self.scratch_slot]]
        self.inputs.send()
        self._run_packed(bucket)
        self.forward.gather_last(len(batch), batch[0])

    def _run_packed(self, bucket: int) -> None:
        self._replay(("prefill", bucket), partial(self.forward.prefill_packed, bucket),
                     f"packed prefill of {bucket} rows")

    def _chunks(self, slot: int, tokens: np.ndarray, start: int):
        """Prefill one prompt alone in chunks of PREFILL_CHUNK (context on): yields each chunk's token
        count once its forward is queued (its rows in forward.x until the next chunk). A chunk is padded
        to its row bucket with rows that continue the sequence (token 0 at the next positions, which
        later tokens overwrite before anything reads them) and replayed as that bucket's CUDA graph,
        unless the padding would pass the end of the slot's context."""
        for c in range(0, len(tokens), PREFILL_CHUNK):
            chunk = tokens[c : c + PREFILL_CHUNK]
            n, first = len(chunk), start + c
            bucket = pack_bucket(n, self.forward.rows)
            if first + bucket > self.max_context:
                bucket = n
            inputs = self.inputs.buffer()
            inputs[0, :bucket] = 0
            inputs[0, :n] = chunk
            inputs[1, :bucket] = np.arange(first, first + bucket)
            inputs[2, :bucket] = slot
            self.inputs.send()
            self._run_chunk(bucket)
            yield n

    def _run_chunk(self, rows: int) -> None:
        self._replay(("chunk", rows), partial(self.forward.prefill, rows), f"prefill chunk of {rows} rows",
                     capture=rows in pack_buckets(self.forward.rows))  # an unpadded tail: not a bucket

    def close(self) -> None:
        """Free the engine's device memory and destroy its context; call from the thread that drives it
        (any thread: the context is pushed here and popped again by its destruction)."""
        if cuda.Context.get_current() != self.rt.context:
            self.rt.context.push()
        if self.graphs is not None:
            self.graphs.close()
        del self.forward, self.weights, self.sampler, self.inputs  # freed while the context is current here
        self.rt.close()  # detaches the current context: destroyed and popped off this thread's stack


class _engine_errors:
    """Turn a CUDA driver error of a step into an EngineError naming the step and slots."""

    def __init__(self, what: str, slots: list[int]):
        self.what, self.slots = what, slots

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, cuda.Error) and not isinstance(exc, EngineError):
            if isinstance(exc, cuda.MemoryError):
                raise OutOfMemory(f"{self.what} of slots {self.slots}: {exc}") from exc
            raise EngineError(f"{self.what} of slots {self.slots}: CUDA error: {exc}") from exc
        return False


def estimate_bytes(gguf, config, operand_size: int, max_batch: int, max_context: int) -> int:
    """Device bytes for weights + KV cache (with the scratch slot) + scratch and logits buffers."""
    c = config
    kv = 2 * c.n_layers * (max_batch + 1) * c.n_kv_heads * max_context * c.head_dim * operand_size
    rows = max(max_batch, PREFILL_CHUNK)
    per_row = 4 * (c.dim + c.qkv_dim + c.ffn_in_dim) + operand_size * (c.dim + 2 * c.q_dim + c.hidden_dim)
    splits = max_batch * n_splits(max_context) + rows * pack_splits(max_context)  # attention partials
    scratch = rows * per_row + splits * c.n_heads * (c.head_dim + 2) * 4 + max_batch * c.dim * 4
    logits = 4 * c.vocab_size * (max_batch + rows)
    return device_bytes(gguf, config, operand_size) + kv + scratch + logits
