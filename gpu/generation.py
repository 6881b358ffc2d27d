"""One sequence's generation state: sampling, streaming detokenisation, stop conditions.

The engine produces a logits row; ``Generation.step`` samples it on the host and ``accept`` turns the
token into a text delta and maybe a finish reason. An engine that samples on the device (see
``gpu.runner.decode_rows``) hands ``accept`` the token directly, using ``params``, ``n_generated``,
``history`` and ``banned_ids``. It never touches the engine, so the runner, the scheduler and tests drive
it alike.

End conditions, checked in this order after each sampled token:
- a stop token id (``params.stop_token_ids``) or an end-of-generation token (unless ``ignore_eos``,
  which bans them instead) → ``"stop"``; the token's own text is not emitted;
- a stop string completed in the text → ``"stop"``; the text before it is emitted, it and the rest not;
- ``max_tokens`` tokens generated, or prompt + output filling ``max_context`` → ``"length"``;
- ``cancel()`` → ``"cancelled"``; a sampling failure (NaN logits, everything banned) → ``"error"``.
On every end, text still held back (partial UTF-8, a possible stop-string prefix) is settled and emitted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from .errors import GenerationError, SamplingError
from .params import SamplingParams
from .sampling import Sampler, TokenLogprobs, token_logprobs
from .stops import StopMatcher

logger = logging.getLogger(__name__)

FinishReason = Literal["stop", "length", "cancelled", "error"]


class StreamDecoder(Protocol):
    def feed(self, token_id: int) -> str: ...
    def flush(self) -> str: ...


class TokenizerLike(Protocol):
    """What generation needs of ``tokenizer.Tokenizer``."""

    vocab_size: int
    eog_ids: frozenset[int]

    def is_eog(self, token_id: int) -> bool: ...
    def stream_decoder(self, skip_special: bool = False, after_text: bool = False) -> StreamDecoder: ...


@dataclass(frozen=True)
class StepResult:
    """One step's outcome: the token (None for cancel/error), the text it releases, and the end if any."""

    token_id: int | None
    text: str
    logprobs: TokenLogprobs | None = None
    finish_reason: FinishReason | None = None
    error: str | None = None


class Generation:
    """Per-sequence state from the prompt to the finish reason."""

    def __init__(self, prompt_ids: Sequence[int], params: SamplingParams, tokenizer: TokenizerLike,
                 *, max_context: int | None = None) -> None:
        self.prompt_ids = [int(i) for i in prompt_ids]
        if not self.prompt_ids:
            raise GenerationError("prompt_ids is empty: generation needs at least one prompt token")
        if max_context is not None and len(self.prompt_ids) >= max_context:
            raise GenerationError(f"prompt of {len(self.prompt_ids)} tokens leaves no room in a context "
                                  f"of {max_context}")
        bad = [i for i in params.logit_bias if i >= tokenizer.vocab_size]
        if bad:
            raise GenerationError(f"logit_bias id {bad[0]} >= vocab_size {tokenizer.vocab_size}")
        self.tokenizer = tokenizer
        self.max_context = max_context
        self.sampler = Sampler(params, sorted(tokenizer.eog_ids) if params.ignore_eos else ())
        self.params = self.sampler.params  # seed resolved
        # what a device sampler needs: ignore_eos as banned ids; logit bias and logprobs stay on the host
        self.device_params = (self.params.model_copy(update={"ignore_eos": False})
                              if not (self.params.logit_bias or self.params.logprobs) else None)
        self.banned_ids = tuple(sorted(tokenizer.eog_ids)) if self.params.ignore_eos else ()
        self.output_ids: list[int] = []
        self.finish_reason: FinishReason | None = None
        self.error: str | None = None
        self._history = list(self.prompt_ids)
        self._decoder = tokenizer.stream_decoder(after_text=True)  # generated text follows the prompt
        self._stops = StopMatcher(self.params.stop)
        self._stop_ids = frozenset(self.params.stop_token_ids)
        self._texts: list[str] = []

    @property
    def seed(self) -> int:
        return self.sampler.seed

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def n_generated(self) -> int:
        """Tokens accepted so far: the step index of the next token (its Philox counter)."""
        return len(self.output_ids)

    @property
    def history(self) -> list[int]:
        """Prompt + output so far (the penalty window's source); do not modify."""
        return self._history

    @property
    def device_sampleable(self) -> bool:
        """True when a device sampler may pick this sequence's tokens: no logprobs, no logit bias."""
        return self.device_params is not None

    @property
    def length_ends_next(self) -> bool:
        """True when the next token accepted ends this generation by length (`max_tokens`, the context)."""
        return len(self.output_ids) + 1 >= self.params.max_tokens or (
            self.max_context is not None and len(self._history) + 1 >= self.max_context)

    @property
    def text(self) -> str:
        """Everything emitted so far."""
        return "".join(self._texts)

    def step(self, logits_row: np.ndarray) -> StepResult:
        """Sample the next token from ``logits_row`` ([vocab]) and report what it releases."""
        if self.finished:
            raise GenerationError(f"generation already finished ({self.finish_reason})")
        try:
            token = self.sampler.sample(logits_row, self._history, len(self.output_ids))
        except SamplingError as exc:
            return self.fail(str(exc))
        logprobs = token_logprobs(logits_row, token, self.params.logprobs) if self.params.logprobs else None
        return self.accept(token, logprobs)

    def accept(self, token: int, logprobs: TokenLogprobs | None = None) -> StepResult:
        """Take ``token`` as the next output (sampled here or by the engine) and report what it releases:
        history, stop ids, end of generation, stop strings, ``max_tokens`` and the context limit."""
        if self.finished:
            raise GenerationError(f"generation already finished ({self.finish_reason})")
        n = len(self.output_ids)
        self.output_ids.append(token)
        self._history.append(token)
        if token in self._stop_ids or (not self.params.ignore_eos and self.tokenizer.is_eog(token)):
            return self._end(token, "", logprobs, "stop")
        text, stopped = self._stops.push(self._decoder.feed(token))
        if stopped:
            return self._end(token, text, logprobs, "stop", settle=False)
        if n + 1 >= self.params.max_tokens or (
                self.max_context is not None and len(self._history) >= self.max_context):
            return self._end(token, text, logprobs, "length")
        self._texts.append(text)
        return StepResult(token, text, logprobs)

    def cancel(self) -> StepResult:
        """End now (between steps): releases held text, finish reason ``"cancelled"``."""
        return self._end(None, "", None, "cancelled")

    def fail(self, message: str) -> StepResult:
        """End with ``"error"`` and ``message`` (e.g. the engine raised for this sequence)."""
        logger.warning("generation failed after %d tokens: %s", len(self.output_ids), message)
        self.error = message
        return self._end(None, "", None, "error", settle=False)

    def _end(self, token: int | None, text: str, logprobs: TokenLogprobs | None, reason: FinishReason,
             *, settle: bool = True) -> StepResult:
        if self.finished:
            raise GenerationError(f"generation already finished ({self.finish_reason})")
        if settle:  # partial UTF-8 and held stop-prefix text: a stop string may still complete here
            tail, stopped = self._stops.push(self._decoder.flush())
            text += tail if stopped else tail + self._stops.flush()
            reason = "stop" if stopped and reason == "length" else reason
        self.finish_reason = reason
        self._texts.append(text)
        return StepResult(token, text, logprobs, reason, self.error)
