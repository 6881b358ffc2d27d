"""The transformer forward pass over the numpy ops, for one sequence at a time.

Every architectural choice comes from `ModelConfig` — norm (`rmsnorm`/`layernorm`), activation
(`swiglu` on fused gate|up / `gelu`), RoPE variant (`normal`/`neox`/`none`) and its scaling, learned
positions — and from which optional tensors (`*_bias`, `pos_embd`) the weights carry. There is no
per-architecture branch here: llama, qwen2, phi3 and gpt2 are all the same loop.

Attention and feed-forward inputs use fused matrices (`wqkv` rows q|k|v, `w_up` rows gate|up for
swiglu), so a decode step is 4 matrix-vector products per layer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import reference as ops
from .errors import UnsupportedModel
from .kv_cache import KVCache

logger = logging.getLogger(__name__)

ATTENTION_CHUNK = 256  # prefill queries per attention call


@dataclass(frozen=True)
class LayerParams:
    """One block's float32 weights, C-contiguous, matrices `[out, in]`."""

    attn_norm: np.ndarray  # [dim]
    attn_norm_bias: np.ndarray | None  # [dim]
    wqkv: np.ndarray  # [q_dim + 2 * kv_dim, dim]
    bqkv: np.ndarray | None  # [q_dim + 2 * kv_dim]
    wo: np.ndarray  # [dim, q_dim]
    bo: np.ndarray | None  # [dim]
    ffn_norm: np.ndarray  # [dim]
    ffn_norm_bias: np.ndarray | None  # [dim]
    w_up: np.ndarray  # [2 * hidden_dim, dim] gate|up for swiglu, [hidden_dim, dim] for gelu
    b_up: np.ndarray | None
    w_down: np.ndarray  # [dim, hidden_dim]
    b_down: np.ndarray | None  # [dim]


@dataclass(frozen=True)
class ModelParams:
    """The whole model's float32 weights as the forward pass uses them."""

    token_embd: np.ndarray  # [vocab, dim]
    pos_embd: np.ndarray | None  # [n_positions, dim] (learned positions)
    output_norm: np.ndarray  # [dim]
    output_norm_bias: np.ndarray | None  # [dim]
    output: np.ndarray  # [vocab, dim] (the embedding itself when tied)
    layers: tuple[LayerParams, ...]


def _rmsnorm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, eps: float) -> np.ndarray:
    return ops.rmsnorm(x, weight, eps)


def _swiglu_fused(gate_up: np.ndarray) -> np.ndarray:
    gate, up = np.split(gate_up, 2, axis=-1)  # [T, hidden_dim] each
    return ops.swiglu(gate, up)


NORMS: dict[str, Callable[..., np.ndarray]] = {"rmsnorm": _rmsnorm, "layernorm": ops.layernorm}
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"swiglu": _swiglu_fused, "gelu": ops.gelu}
ROPES: dict[str, Callable[..., np.ndarray] | None] = {
    "normal": ops.rope_normal,
    "neox": ops.rope_neox,
    "none": None,
}


def _pick(table: dict, key: str, what: str):
    if key not in table:
        raise UnsupportedModel(f"{what} {key!r} is not implemented (known: {', '.join(table)})")
    return table[key]


def rope_tables(config, max_context: int) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [max_context, rope_dim/2] for positions 0..max_context-1.

    Linear scaling multiplies positions by `rope_freq_scale`; Phi-3 LongRoPE divides the frequencies
    by the long factors when max_context exceeds the original context (llama.cpp's rule, fixed per
    engine), else by the short ones, and scales cos/sin by `attn_factor`.
    """
    factors, attn_factor = None, 1.0
    if config.rope_scaling is not None:
        factors = np.array(config.rope_scaling.factors(max_context), dtype=np.float64)
        attn_factor = config.rope_scaling.attn_factor
    inv_freq = ops.rope_inv_freq(config.rope_dim, config.rope_theta, factors) * config.rope_freq_scale
    return ops.rope_cos_sin(np.arange(max_context), inv_freq, attn_factor)


class Transformer:
    """Forward pass of one sequence; keys and values go to (and come from) a `KVCache` slot."""

    def __init__(self, config, params: ModelParams, max_context: int):
        self.config = config
        self.params = params
        self.norm = _pick(NORMS, config.norm, "norm")
        self.activation = _pick(ACTIVATIONS, config.activation, "activation")
        self.rope = _pick(ROPES, config.rope, "rope")
        self.q_dim = config.n_heads * config.head_dim
        self.kv_dim = config.n_kv_heads * config.head_dim
        if self.rope is not None:
            self.cos, self.sin = rope_tables(config, max_context)  # [max_context, rope_dim/2] each

    def forward(
        self, tokens: np.ndarray, start_pos: int, kv: KVCache, slot: int, all_logits: bool = False
    ) -> np.ndarray:
        """Logits [T, vocab] (or [1, vocab] for the last token) for `tokens` [T] at start_pos..."""
        cfg, p = self.config, self.params
        seq_len = len(tokens)
        positions = np.arange(start_pos, start_pos + seq_len)  # [T]
        x = ops.embedding(p.token_embd, tokens)  # [T, dim]
        if p.pos_embd is not None:
            x = ops.add(x, p.pos_embd[positions])
        if self.rope is not None:
            cos, sin = self.cos[positions], self.sin[positions]  # [T, rope_dim/2]
        for i, layer in enumerate(p.layers):
            h = self.norm(x, layer.attn_norm, layer.attn_norm_bias, cfg.norm_eps)
            qkv = ops.linear(h, layer.wqkv, layer.bqkv)  # [T, q_dim + 2*kv_dim]
            q = qkv[:, : self.q_dim].reshape(seq_len, cfg.n_heads, cfg.head_dim)
            k = qkv[:, self.q_dim : self.q_dim + self.kv_dim].reshape(seq_len, cfg.n_kv_heads, cfg.head_dim)
            v = qkv[:, self.q_dim + self.kv_dim :].reshape(seq_len, cfg.n_kv_heads, cfg.head_dim)
            if self.rope is not None:
                q, k = self.rope(q, cos, sin), self.rope(k, cos, sin)
            kv.write(i, slot, start_pos, k, v)
            keys, values = kv.view(i, slot, start_pos + seq_len)  # [n_kv, S, hd] each
            attn = self._attention(q, keys, values, start_pos)  # [T, q_dim]
            x = ops.add(x, ops.linear(attn, layer.wo, layer.bo))
            h = self.norm(x, layer.ffn_norm, layer.ffn_norm_bias, cfg.norm_eps)
            ff = self.activation(ops.linear(h, layer.w_up, layer.b_up))  # [T, hidden_dim]
            x = ops.add(x, ops.linear(ff, layer.w_down, layer.b_down))
        if not all_logits:
            x = x[-1:]
        x = self.norm(x, p.output_norm, p.output_norm_bias, cfg.norm_eps)
        return ops.linear(x, p.output)  # [T or 1, vocab]

    @staticmethod
    def _attention(q: np.ndarray, keys: np.ndarray, values: np.ndarray, start_pos: int) -> np.ndarray:
        """Decode for one query; prefill in query chunks so scores stay <= n_heads x CHUNK x S."""
        if len(q) == 1:
            return ops.attention_decode(q[0], keys, values)[None, :]  # [1, q_dim]
        chunks = []
        for c in range(0, len(q), ATTENTION_CHUNK):
            end = start_pos + min(c + ATTENTION_CHUNK, len(q))
            qc = q[c : c + ATTENTION_CHUNK]  # [chunk, n_heads, hd]
            chunks.append(ops.attention_prefill(qc, keys[:, :end], values[:, :end], start_pos + c))
        return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]  # [T, q_dim]
