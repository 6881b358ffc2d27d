"""`load_weights(gguf, config)`: every tensor of the model, checked against the architecture's table.

Fields hold whatever ``convert(name, data)`` returns — by default the float32 numpy array from
``gguf.dequantize(name)`` (shape ``[rows, cols]``, matrices ``[out, in]``). With ``raw=True``, ``data``
is the tensor's quantised bytes (a read-only uint8 view; look up ``gguf.tensors[name]`` for its
ggml type and shape), so a GPU backend can upload them and dequantise on the device.

Fused tensors stay as the file stores them: llama/qwen2 fill ``wq, wk, wv`` and ``w_gate, w_up``;
phi3 fills ``wqkv`` (rows q|k|v) and ``w_gate_up`` (rows gate|up); gpt2 fills ``wqkv``, ``w_up`` and
every bias. ``fuse=True`` (numpy arrays only) concatenates llama/qwen2's parts into ``wqkv``/``bqkv``
and ``w_gate_up`` too, so every architecture then uses the same fields; with ``raw=True`` it needs a
``convert`` that returns row arrays (parts fused together must convert to the same dtype).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ArchitectureError
from .tensor_tables import CONFIG_TENSORS, GLOBAL_TENSORS, LAYER_TENSORS, TensorSpec, expected_shape

if TYPE_CHECKING:
    from .arch import ModelConfig
    from .reader import GGUFFile

logger = logging.getLogger(__name__)

Convert = Callable[[str, np.ndarray], Any]


@dataclass(frozen=True)
class LayerWeights:
    """One transformer block. Unused fields are None (see the module docstring for which are set)."""

    attn_norm: Any  # [dim]
    wo: Any  # [dim, q_dim]
    ffn_norm: Any  # [dim]
    w_down: Any  # [dim, hidden_dim]
    attn_norm_bias: Any = None  # [dim] (gpt2)
    wqkv: Any = None  # [q_dim + 2*kv_dim, dim] rows q|k|v (phi3, gpt2; all with fuse=True)
    wq: Any = None  # [q_dim, dim] (llama, qwen2)
    wk: Any = None  # [kv_dim, dim]
    wv: Any = None  # [kv_dim, dim]
    bqkv: Any = None  # [q_dim + 2*kv_dim] (gpt2; qwen2 with fuse=True)
    bq: Any = None  # [q_dim] (qwen2)
    bk: Any = None  # [kv_dim]
    bv: Any = None  # [kv_dim]
    bo: Any = None  # [dim] (gpt2)
    ffn_norm_bias: Any = None  # [dim] (gpt2)
    w_gate_up: Any = None  # [2*hidden_dim, dim] rows gate|up (phi3; llama/qwen2 with fuse=True)
    w_gate: Any = None  # [hidden_dim, dim] (llama, qwen2)
    w_up: Any = None  # [hidden_dim, dim] (llama, qwen2: swiglu "up"; gpt2: gelu input)
    b_up: Any = None  # [hidden_dim] (gpt2)
    b_down: Any = None  # [dim] (gpt2)


@dataclass(frozen=True)
class ModelWeights:
    token_embd: Any  # [vocab_size, dim]
    output_norm: Any  # [dim]
    output: Any  # [vocab_size, dim]; the very token_embd object when the embeddings are tied
    layers: list[LayerWeights]
    pos_embd: Any = None  # [context_length, dim] (gpt2)
    output_norm_bias: Any = None  # [dim] (gpt2)


def _identity(name: str, data: np.ndarray) -> np.ndarray:
    return data


def load_weights(
    gguf: GGUFFile,
    config: ModelConfig,
    convert: Convert = _identity,
    *,
    raw: bool = False,
    fuse: bool = False,
) -> ModelWeights:
    """All weights of ``config.arch``; ArchitectureError names a missing, mis-shaped or unknown tensor."""
    if fuse and raw and convert is _identity:
        raise ValueError("fuse=True concatenates arrays by rows; with raw=True, `convert` must turn "
                         "the bytes into such arrays")
    if config.arch not in LAYER_TENSORS:
        raise ArchitectureError(f"{gguf.path}: no tensor table for architecture {config.arch!r}")
    used: set[str] = set()

    def fetch(spec: TensorSpec, layer: int | None = None) -> Any:
        name = spec.name.format(i=layer)
        info = gguf.tensors.get(name)
        if info is None:
            if spec.required:
                raise ArchitectureError(f"{gguf.path}: missing tensor {name} ({config.arch} {spec.field})")
            return None
        want = expected_shape(spec, config)
        if info.shape != want:
            raise ArchitectureError(f"{gguf.path}: tensor {name} has shape {list(info.shape)}, expected "
                                    f"{list(want)} ({config.arch} {spec.field}, numpy order)")
        used.add(name)
        return convert(name, gguf.raw(name) if raw else gguf.dequantize(name))

    top = {spec.field: fetch(spec) for spec in GLOBAL_TENSORS[config.arch]}
    layers = []
    for i in range(config.n_layers):
        parts = {spec.field: fetch(spec, i) for spec in LAYER_TENSORS[config.arch]}
        layers.append(LayerWeights(**(_fused(parts, i) if fuse else parts)))
    unknown = sorted(set(gguf.tensors) - used - CONFIG_TENSORS)
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise ArchitectureError(f"{gguf.path}: {len(unknown)} tensor(s) not used by {config.arch} "
                                f"with {config.n_layers} layers: {shown}")
    if top["output"] is None:
        top["output"] = top["token_embd"]
    logger.debug("%s: loaded %d tensors (%s, tied=%s)", gguf.path, len(used), config.arch,
                 config.tied_embeddings)
    return ModelWeights(layers=layers, **top)


def _fused(parts: dict[str, Any], layer: int) -> dict[str, Any]:
    """Concatenate separate q|k|v (and their biases) and gate|up into the fused fields."""
    out = dict(parts)
    if out.get("wq") is not None:
        out["wqkv"] = np.concatenate([out.pop("wq"), out.pop("wk"), out.pop("wv")])
        biases = [out.pop(k, None) for k in ("bq", "bk", "bv")]
        if all(b is not None for b in biases):
            out["bqkv"] = np.concatenate(biases)
        elif any(b is not None for b in biases):
            raise ArchitectureError(f"layer {layer}: only some of the Q/K/V biases are present")
    if out.get("w_gate") is not None:
        out["w_gate_up"] = np.concatenate([out.pop("w_gate"), out.pop("w_up")])
    return out
