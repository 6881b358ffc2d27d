"""Sampling parameters of one request: validated once, shared by `orcd run`, the queue's Job and the HTTP API.

Defaults follow llama.cpp's (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, penalties off over the
last 64 tokens). Every bound is checked here, so the sampler never sees an out-of-range value; a
pydantic ``ValidationError`` names the offending field (``loc``). NaN and infinities are rejected.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256
MAX_STOP_TOKEN_IDS = 64
MAX_LOGIT_BIAS = 1024  # entries
LOGIT_BIAS_BOUND = 100.0  # as OpenAI: ±100 bans or forces a token
MAX_TOKENS_BOUND = 131072
MAX_LOGPROBS = 20
SEED_BOUND = 2**64 - 1  # Philox key = (seed low 32 bits, seed high 32 bits)
RANDOM_SEED_BITS = 53  # random seeds stay exact as JSON numbers in any language

TokenId = Annotated[int, Field(ge=0, lt=2**31)]
StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
Bias = Annotated[float, Field(ge=-LOGIT_BIAS_BOUND, le=LOGIT_BIAS_BOUND)]


class SamplingParams(BaseModel):
    """How to turn one request's logits into tokens, and when to stop."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    temperature: float = Field(0.8, ge=0.0, le=100.0, description="0 = greedy (argmax)")
    top_k: int = Field(40, ge=0, description="keep the k most likely tokens; 0 = off")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="nucleus mass; 1 = off")
    min_p: float = Field(0.05, ge=0.0, lt=1.0, description="drop p < min_p * p_max; 0 = off")
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0, description="llama.cpp repeat penalty; 1 = off")
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    penalty_last_n: int = Field(64, ge=-1, description="tokens the penalties look back on; -1 = all, 0 = off")
    logit_bias: dict[TokenId, Bias] = Field(default_factory=dict, max_length=MAX_LOGIT_BIAS)
    stop: list[StopString] = Field(default_factory=list, max_length=MAX_STOP_STRINGS)
    stop_token_ids: list[TokenId] = Field(default_factory=list, max_length=MAX_STOP_TOKEN_IDS)
    max_tokens: int = Field(256, ge=1, le=MAX_TOKENS_BOUND)
    seed: int | None = Field(None, ge=0, le=SEED_BOUND, description="None = random, recorded on use")
    logprobs: int = Field(0, ge=0, le=MAX_LOGPROBS, description="top-n log-probabilities per token; 0 = off")
    ignore_eos: bool = False

    @field_validator("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "presence_penalty",
                     "frequency_penalty", "penalty_last_n", "max_tokens", "seed", "logprobs", mode="before")
    @classmethod
    def _no_bool_floats(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("expected a number, got a boolean")
        return value

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def penalises(self) -> bool:
        """True when the penalties change any logit (they look back and one of them is not neutral)."""
        neutral = (self.repetition_penalty, self.presence_penalty, self.frequency_penalty) == (1.0, 0.0, 0.0)
        return bool(self.penalty_last_n) and not neutral

    def resolve_seed(self) -> SamplingParams:
        """These parameters with a concrete seed: unchanged if set, else a fresh random one."""
        if self.seed is not None:
            return self
        return self.model_copy(update={"seed": secrets.randbits(RANDOM_SEED_BITS)})
