"""The numpy backend: float32 weights in host memory, the forward pass of `gpu.model`.

Sequences of a batch are computed one after another through the same code path, so a sequence's
logits are bit-identical alone or in any batch (OpenBLAS's gemm and gemv round differently, so rows
stacked into one matrix product would not be). Decode is matrix-vector (BLAS gemv) bound: every step
streams all weights once per sequence.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from gguf_loader.memory import kv_bytes_per_token

from .engine import Engine
from .errors import OutOfMemory
from .kv_cache import KVCache
from .model import LayerParams, ModelParams, Transformer

logger = logging.getLogger(__name__)


def _available_host_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (None where it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _check_state_fits(config, max_batch: int, max_context: int) -> None:
    """Refuse at once when the KV cache and RoPE tables cannot fit, before computing any of them."""
    kv = kv_bytes_per_token(config, "f32") * max_batch * max_context
    rope = 2 * max_context * (config.rope_dim // 2) * 8 if config.rope != "none" else 0  # float64 cos, sin
    available = _available_host_bytes()
    if available is not None and kv + rope > available:
        raise OutOfMemory(
            f"KV cache of {max_batch} slots x {max_context} tokens and RoPE tables need "
            f"{(kv + rope) / 2**30:.1f} GiB, {available / 2**30:.1f} GiB of host memory available"
        )


def _f32(name: str, array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def params_from_weights(weights) -> ModelParams:
    """The loader's fused weights (`load_weights(..., fuse=True)`) as the forward pass's records."""
    layers = tuple(
        LayerParams(
            attn_norm=lw.attn_norm,
            attn_norm_bias=lw.attn_norm_bias,
            wqkv=lw.wqkv,
            bqkv=lw.bqkv,
            wo=lw.wo,
            bo=lw.bo,
            ffn_norm=lw.ffn_norm,
            ffn_norm_bias=lw.ffn_norm_bias,
            w_up=lw.w_gate_up if lw.w_gate_up is not None else lw.w_up,
            b_up=lw.b_up,
            w_down=lw.w_down,
            b_down=lw.b_down,
        )
        for lw in weights.layers
    )
    return ModelParams(
        token_embd=weights.token_embd,
        pos_embd=weights.pos_embd,
        output_norm=weights.output_norm,
        output_norm_bias=weights.output_norm_bias,
        output=weights.output,
        layers=layers,
    )


class NumpyEngine(Engine):
    backend = "numpy"

    def __init__(self, config, params: ModelParams, max_batch: int, max_context: int):
        super().__init__(config, max_batch, max_context)
        _check_state_fits(config, max_batch, self.max_context)
        try:
            self.model = Transformer(config, params, self.max_context)  # RoPE tables: [max_context, ...]
            self.kv = KVCache(
                config.n_layers, max_batch, config.n_kv_heads, self.max_context, config.head_dim
            )
        except MemoryError as exc:
            raise OutOfMemory(
                f"KV cache of {max_batch} slots x {self.max_context} tokens does not fit in host memory"
            ) from exc

    @classmethod
    def load(cls, path: str | Path, max_batch: int = 8, max_context: int = 2048) -> NumpyEngine:
        from gguf_loader.arch import ModelConfig, load_weights
        from gguf_loader.reader import open_gguf

        t0 = time.perf_counter()
        with open_gguf(path) as gguf:
            config = ModelConfig.from_gguf(gguf)
            try:
                weights = load_weights(gguf, config, convert=_f32, fuse=True)
                params = params_from_weights(weights)
            except MemoryError as exc:
                raise OutOfMemory(f"{path}: float32 weights do not fit in host memory") from exc
        logger.info("%s: %s loaded in %.1fs", path, config.arch, time.perf_counter() - t0)
        return cls(config, params, max_batch, max_context)

    def _prefill(self, slots: list[int], tokens: list[np.ndarray], starts: list[int]) -> np.ndarray:
        batch = zip(slots, tokens, starts, strict=True)
        rows = [self.model.forward(t, start, self.kv, slot)[0] for slot, t, start in batch]
        return np.stack(rows)  # [B, vocab]

    def _decode(self, slots: list[int], token_ids: np.ndarray, starts: list[int]) -> np.ndarray:
        rows = [
            self.model.forward(token_ids[i : i + 1], start, self.kv, slot)[0]
            for i, (slot, start) in enumerate(zip(slots, starts, strict=True))
        ]
        return np.stack(rows)  # [B, vocab]

    def _prefill_all(self, slot: int, tokens: np.ndarray, start: int) -> np.ndarray:
        return self.model.forward(tokens, start, self.kv, slot, all_logits=True)  # [T, vocab]

    def close(self) -> None:
        del self.kv, self.model
