"""Generation loops over the engine API: one request (`generate`) or several at once (`generate_batch`).

`generate_batch` is a small continuous batcher: requests wait until a KV slot is free, new ones are
prefilled together, running ones decode together, and finished ones give their slot back at once.
Each request's tokens depend only on its own prompt, parameters and seed (see gpu.sampling).

`decode_rows` + `advance` are the one decode step every loop uses (these two and worker.scheduler, through
`gpu.decode_ahead`, which queues the next step before reading a step's tokens where the engine can), and
`prefill_rows` its twin for the first token: an engine with `decode_mixed` / `prefill_mixed` (CUDA)
picks the tokens of device-sampleable sequences itself and returns logits only for the others; any
other engine returns logits and every token is sampled on the host.
Which path a sequence takes depends only on its own parameters, never on its batch (docs/sampling.md).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .decode_ahead import DecodeAhead
from .errors import EngineError, KVCacheFull, SamplingError
from .generation import Generation, StepResult, TokenizerLike
from .params import SamplingParams

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: Sequence[int]
    params: SamplingParams
    cancelled: Callable[[], bool] | None = None  # polled between decode steps


@dataclass
class Timings:
    """Wall-clock figures of one `generate`/`generate_batch` call (seconds)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    prefill_s: float = 0.0  # engine.prefill calls, sampling included
    decode_s: float = 0.0  # engine.decode calls, sampling included
    ttft_s: float | None = None  # start → first token sampled
    decode_tokens: int = 0  # tokens produced by decode calls (the first token of each comes from prefill)
    seeds: list[int] = field(default_factory=list)

    @property
    def prefill_tps(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s else 0.0

    @property
    def decode_tps(self) -> float:
        return self.decode_tokens / self.decode_s if self.decode_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"prefill_s": round(self.prefill_s, 6), "decode_s": round(self.decode_s, 6),
                "ttft_s": None if self.ttft_s is None else round(self.ttft_s, 6),
                "prefill_tok_s": round(self.prefill_tps, 3), "decode_tok_s": round(self.decode_tps, 3)}


def encode_prompt(tokenizer: Any, prompt: str, *, chat: bool = False, system: str | None = None) -> list[int]:
    """Prompt ids: plain text with the model's BOS rule, or a chat rendered by the model's template
    (special tokens in it parsed; a doubled BOS, template + tokenizer, reduced to one)."""
    if not chat:
        return tokenizer.encode(prompt, add_special=True, parse_special=False)
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    ids = tokenizer.encode(tokenizer.render_chat(messages, add_generation_prompt=True),
                           add_special=True, parse_special=True)
    bos = getattr(tokenizer, "bos_id", None)
    if bos is not None and len(ids) >= 2 and ids[0] == ids[1] == bos:
        ids = ids[1:]
    return ids


def generate(engine: Any, tokenizer: TokenizerLike, prompt_ids: Sequence[int], params: SamplingParams,
             *, timings: Timings | None = None,
             cancelled: Callable[[], bool] | None = None) -> Iterator[StepResult]:
    """Stream one request's steps; the last one carries the finish reason. Engine errors propagate."""
    generation = Generation(prompt_ids, params, tokenizer, max_context=engine.max_context)
    for _, result in _run(engine, [(0, generation, cancelled)], [], timings):
        yield result


def generate_batch(engine: Any, tokenizer: TokenizerLike, requests: Sequence[GenerationRequest],
                   *, timings: Timings | None = None) -> Iterator[tuple[int, StepResult]]:
    """Stream ``(request index, step)`` for several requests, interleaved. A request that cannot start
    (empty prompt, prompt filling the context) yields one ``"error"`` step; the others go on. Errors of
    the engine itself propagate; every slot taken is freed whatever happens."""
    ready, failed = [], []
    for index, request in enumerate(requests):
        try:
            generation = Generation(request.prompt_ids, request.params, tokenizer,
                                    max_context=engine.max_context)
        except EngineError as exc:
            failed.append((index, StepResult(None, "", None, "error", str(exc))))
            continue
        ready.append((index, generation, request.cancelled))
    yield from _run(engine, ready, failed, timings)


def _run(engine: Any, ready: list, failed: list,
         timings: Timings | None) -> Iterator[tuple[int, StepResult]]:
    t = timings if timings is not None else Timings()
    t.seeds = [g.seed for _, g, _ in ready]
    start = time.perf_counter()
    yield from failed
    waiting = deque(ready)
    running: dict[int, tuple[int, Generation, Callable[[], bool] | None]] = {}  # slot -> request
    ahead = DecodeAhead(engine)
    try:
        while waiting or running:
            admitted: list[int] = []
            while waiting and len(running) < engine.max_batch:
                try:
                    slot = engine.alloc()
                except KVCacheFull:
                    if running:
                        break
                    raise
                running[slot] = waiting.popleft()
                admitted.append(slot)
            if admitted:
                yield from _prefill(engine, running, admitted, t, start)
            for slot, (index, generation, cancelled) in list(running.items()):
                if cancelled is not None and cancelled():
                    engine.free(slot)
                    del running[slot]
                    yield index, generation.cancel()
            if running:
                yield from _decode(engine, ahead, running, t)
    finally:
        for slot in running:
            engine.free(slot)


def _prefill(engine: Any, running: dict, slots: list[int], t: Timings,
             start: float) -> Iterator[tuple[int, StepResult]]:
    t0 = time.perf_counter()
    generations = [running[s][1] for s in slots]
    rows = prefill_rows(engine, slots, [g.prompt_ids for g in generations], generations)
    results = [(slot, advance(g, row)) for slot, g, row in zip(slots, generations, rows, strict=True)]
    t.prefill_s += time.perf_counter() - t0
    t.prompt_tokens += sum(len(running[s][1].prompt_ids) for s in slots)
    if t.ttft_s is None:
        t.ttft_s = time.perf_counter() - start
    yield from _retire(engine, running, results, t)


def _decode(engine: Any, ahead: DecodeAhead, running: dict, t: Timings) -> Iterator[tuple[int, StepResult]]:
    slots = list(running)
    generations = [running[s][1] for s in slots]
    t0 = time.perf_counter()
    rows = ahead.rows(slots, [g.output_ids[-1] for g in generations], generations)
    results = [(slots[i], advance(generations[i], row)) for i, row in rows]
    t.decode_s += time.perf_counter() - t0
    t.decode_tokens += sum(r.token_id is not None for _, r in results)
    yield from _retire(engine, running, results, t)


def _retire(engine: Any, running: dict, results: list[tuple[int, StepResult]],
            t: Timings) -> Iterator[tuple[int, StepResult]]:
    """Count and yield each step; a finished sequence gives its slot back before its step is seen."""
    for slot, result in results:
        t.completion_tokens += result.token_id is not None
        index = running[slot][0]
        if result.finish_reason:
            engine.free(slot)
            del running[slot]
        yield index, result


Row = int | np.ndarray | SamplingError  # a token picked by the engine, a logits row [vocab], or its failure


def decode_rows(engine: Any, slots: list[int], token_ids: list[int], generations: Sequence[Any]) -> list[Row]:
    """One decode step for ``slots`` (fed ``token_ids``): each sequence's `Row` for `advance`.

    With an engine that has ``decode_mixed``, a generation whose ``device_sampleable`` is true gets the
    token the engine sampled (as its host `Sampler` would, docs/sampling.md); every other one gets its
    logits row. Engine errors propagate."""
    plain = lambda: engine.decode(slots, token_ids)  # noqa: E731
    return _rows(getattr(engine, "decode_mixed", None), plain, slots, token_ids, generations)


def prefill_rows(engine: Any, slots: list[int], prompts: list[list[int]],
                 generations: Sequence[Any]) -> list[Row]:
    """`decode_rows` for the prefill of ``prompts`` into ``slots``: each sequence's first token (picked by
    an engine with ``prefill_mixed``) or its logits row."""
    plain = lambda: engine.prefill(slots, prompts)  # noqa: E731
    return _rows(getattr(engine, "prefill_mixed", None), plain, slots, prompts, generations)


def _rows(mixed: Any, plain: Callable[[], Any], slots: list[int], inputs: list, generations: Sequence[Any],
          ) -> list[Row]:
    device = [mixed is not None and getattr(g, "device_sampleable", False) for g in generations]
    if not any(device):
        return list(plain())  # [B, vocab]
    picked = [g if d else None for g, d in zip(generations, device, strict=True)]  # None: host row
    steps = [0 if g is None else g.n_generated for g in picked]
    ids, logits = mixed(slots, inputs, [None if g is None else g.device_params for g in picked], steps,
                        [[] if g is None else g.history for g in picked],
                        [() if g is None else g.banned_ids for g in picked])
    rows: list[Row] = []
    for i, d in enumerate(device):
        if not d:
            rows.append(logits[i])
        elif ids[i] < 0:
            rows.append(SamplingError(f"NaN/+inf logits or no finite logit to sample at step {steps[i]}"))
        else:
            rows.append(int(ids[i]))
    return rows


def advance(generation: Any, row: Row) -> StepResult:
    """Apply one `decode_rows` row: accept the engine's token, sample the logits here, or fail."""
    if isinstance(row, SamplingError):
        return generation.fail(str(row))
    if isinstance(row, int):
        return generation.accept(row)
    return generation.step(row)
