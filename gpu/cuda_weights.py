"""Model weights on the device: dequantised at load (numpy, per tensor) to the operand type (f16 or
bf16) for matrices and embeddings, float32 for norms and biases, uploaded through pinned host memory.

The loader's `fuse=True` layout is used for every architecture: one q|k|v matrix and one gate|up matrix
per layer, so a layer is four projections. Two row orders change so that pairs an epilogue combines sit
in adjacent columns: gate and up rows interleave, and for NEOX RoPE the q and k rows of each head are
permuted so that dims (i, i + rope_dim/2) become (2i, 2i + 1) — the same rotation as llama's adjacent
pairs; q.k is unchanged because q and k move alike (v is not moved). Tied embeddings share one buffer.

Q8_0 matrices (gpu/q8_blocks.py) are not dequantised: they go up as `Q8Matrix` (int8 quants and f16
scales, the same row operations applied to their blocks), which gemv and the embedding gather read
directly and gemm expands into one buffer reserved here for the largest layer matrix.
$ORCD_Q8_WEIGHTS=0 dequantises them like every other type (an A/B switch).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pycuda.driver as cuda

from . import q8_blocks
from .ops.dequant_q8 import Q8Matrix, reserve
from .runtime import Runtime, to_operand

logger = logging.getLogger(__name__)

UPLOAD_CHUNK = 64 << 20  # bytes of pinned staging per copy
Q8_WEIGHTS = os.environ.get("ORCD_Q8_WEIGHTS", "1") != "0"


@dataclass(frozen=True)
class DeviceLayer:
    attn_norm: Any  # [dim] f32
    attn_norm_bias: Any  # [dim] f32 or None
    wqkv: Any  # [q_dim + 2 kv_dim, dim] operand or Q8Matrix (so every matrix)
    bqkv: Any  # [q_dim + 2 kv_dim] f32 or None
    wo: Any  # [dim, q_dim]
    bo: Any
    ffn_norm: Any
    ffn_norm_bias: Any
    w_up: Any  # [2 hidden, dim] gate and up rows interleaved (swiglu) or [hidden, dim] (gelu)
    b_up: Any
    w_down: Any  # [dim, hidden]
    b_down: Any


@dataclass(frozen=True)
class DeviceWeights:
    token_embd: Any  # [vocab, dim] operand
    pos_embd: Any  # [n_positions, dim] operand or None
    output_norm: Any  # [dim] f32
    output_norm_bias: Any
    output: Any  # [vocab, dim] operand (token_embd itself when tied)
    layers: tuple[DeviceLayer, ...]
    rope_factors: Any  # [rope_dim / 2] f32 or None
    attn_factor: float
    rope: str  # "normal" (rotated pairs adjacent: NEOX q/k rows permuted at load) or "none"
    n_params: int


def q8_groups(gguf, config) -> list[list[str]]:
    """The tensors kept as Q8_0, one list per device matrix (none with $ORCD_Q8_WEIGHTS=0)."""
    return q8_blocks.q8_groups(gguf, config) if Q8_WEIGHTS else []


def device_bytes(gguf, config, dtype_size: int) -> int:
    """Bytes the weights take on the device: Q8_0 matrices at 1.0625 a weight plus the expansion buffer for
    the largest layer matrix, other 2-D tensors in the operand type, the rest in f32."""
    groups = q8_groups(gguf, config)
    q8 = {name for group in groups for name in group}
    total = 0
    for name, info in gguf.tensors.items():
        size = q8_blocks.BYTES_PER_WEIGHT if name in q8 else dtype_size if len(info.shape) == 2 else 4
        total += int(info.n_elements * size)
    return total + q8_blocks.expansion_weights(gguf, groups) * dtype_size  # gemm's expansion buffer


class _Uploader:
    """Host arrays -> device arrays, through one pinned staging buffer."""

    def __init__(self, rt: Runtime):
        self.rt = rt
        self.staging = cuda.pagelocked_empty(UPLOAD_CHUNK, np.uint8)
        # id(host array) -> (host array, device array): tied tensors upload once; holding the host array
        # keeps its id from being reused by a later temporary during the load
        self.done: dict[int, tuple[np.ndarray, Any]] = {}

    def __call__(self, host: np.ndarray | None):
        if host is None:
            return None
        if id(host) in self.done:
            return self.done[id(host)][1]
        if host.dtype == q8_blocks.BLOCK:  # Q8_0 blocks [N, K / 32]: quants and scales apart
            dev = Q8Matrix(*(self._upload(part) for part in q8_blocks.split(host)))
        else:
            dev = self._upload(np.ascontiguousarray(host))
        self.done[id(host)] = (host, dev)
        return dev

    def _upload(self, host: np.ndarray):
        dev = self.rt.empty(host.shape, host.dtype, "weights")
        raw = host.reshape(-1).view(np.uint8)
        for off in range(0, raw.size, UPLOAD_CHUNK):
            n = min(UPLOAD_CHUNK, raw.size - off)
            self.staging[:n] = raw[off : off + n]
            cuda.memcpy_htod_async(int(dev.gpudata) + off, self.staging[:n], self.rt.stream)
            self.rt.stream.synchronize()  # the staging buffer is reused by the next chunk
        return dev


def _interleave(gate_up: np.ndarray | None) -> np.ndarray | None:
    """Rows gate|up [2 hidden, ...] -> gate 0, up 0, gate 1, up 1, ... (one gate/up pair per output pair)."""
    if gate_up is None:
        return None
    pairs = gate_up.reshape(2, gate_up.shape[0] // 2, *gate_up.shape[1:]).swapaxes(0, 1)  # [hidden, 2, ...]
    return np.ascontiguousarray(pairs).reshape(gate_up.shape)


def _neox_to_adjacent(wqkv: np.ndarray | None, config) -> np.ndarray | None:
    """Permute each q and k head's first rope_dim rows (or bias entries) from halves to adjacent pairs."""
    if wqkv is None:
        return None
    c = config
    half = c.rope_dim // 2
    head = np.arange(c.head_dim)
    head[: c.rope_dim] = np.stack([np.arange(half), np.arange(half) + half], axis=1).reshape(-1)
    heads = c.n_heads + c.n_kv_heads  # q and k heads; v rows keep their order
    order = np.concatenate([h * c.head_dim + head for h in range(heads)]
                           + [np.arange(heads * c.head_dim, wqkv.shape[0])])
    return np.ascontiguousarray(wqkv[order])


def load_device_weights(rt: Runtime, gguf, config, max_context: int) -> DeviceWeights:
    """Upload every tensor of `gguf`: Q8_0 matrices as Q8Matrix (`q8_groups`), other matrices dequantised
    to `rt.dtype`, vectors in f32."""
    from gguf_loader.arch import load_weights

    groups = q8_groups(gguf, config)
    q8 = {name for group in groups for name in group}

    def convert(name: str, raw: np.ndarray) -> np.ndarray:
        if name in q8:
            return q8_blocks.as_blocks(raw, gguf.tensors[name].shape)  # [N, K / 32] blocks
        array = np.asarray(gguf.dequantize(name), dtype=np.float32)
        return to_operand(array, rt.dtype) if array.ndim == 2 else np.ascontiguousarray(array)

    host = load_weights(gguf, config, convert=convert, raw=True, fuse=True)
    up = _Uploader(rt)
    swiglu = config.activation == "swiglu"
    neox = config.rope == "neox"
    layers = tuple(
        DeviceLayer(
            attn_norm=up(lw.attn_norm), attn_norm_bias=up(lw.attn_norm_bias),
            wqkv=up(_neox_to_adjacent(lw.wqkv, config) if neox else lw.wqkv),
            bqkv=up(_neox_to_adjacent(lw.bqkv, config) if neox else lw.bqkv),
            wo=up(lw.wo), bo=up(lw.bo), ffn_norm=up(lw.ffn_norm), ffn_norm_bias=up(lw.ffn_norm_bias),
            w_up=up(_interleave(lw.w_gate_up) if swiglu else lw.w_up),
            b_up=up(_interleave(lw.b_up) if swiglu else lw.b_up),
            w_down=up(lw.w_down), b_down=up(lw.b_down),
        )
        for lw in host.layers
    )
    room = q8_blocks.expansion_weights(gguf, groups)  # the size device_bytes counts
    if room:
        reserve(rt, room)  # gemm's expansion of a Q8_0 layer matrix (prompts over 64 rows)
    scaling = config.rope_scaling
    factors = None
    if scaling is not None and config.rope != "none":
        factors = up(np.asarray(scaling.factors(max_context), dtype=np.float32))
    n_params = sum(info.n_elements for info in gguf.tensors.values())
    return DeviceWeights(
        token_embd=up(host.token_embd), pos_embd=up(host.pos_embd), output_norm=up(host.output_norm),
        output_norm_bias=up(host.output_norm_bias), output=up(host.output), layers=layers,
        rope_factors=factors, attn_factor=scaling.attn_factor if scaling is not None else 1.0,
        rope="none" if config.rope == "none" else "normal",
        n_params=n_params,
    )
