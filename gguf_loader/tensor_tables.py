"""Per-architecture tables: GGUF tensor name → `ModelWeights`/`LayerWeights` field and expected shape.

Shapes are numpy order (``[rows, cols]`` = ``[out, in]`` for matrices), written as `ModelConfig`
attribute names so one table serves every size. Fused tensors stay fused: phi3 ``attn_qkv`` (rows
q|k|v) → ``wqkv``, phi3 ``ffn_up`` (rows gate|up) → ``w_gate_up``; gpt2 ``attn_qkv`` → ``wqkv``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorSpec:
    field: str
    name: str  # GGUF name; "{i}" stands for the layer index
    shape: tuple[str, ...]  # ModelConfig attributes giving each dimension, numpy order
    required: bool = True


def _spec(field: str, name: str, *shape: str, required: bool = True) -> TensorSpec:
    return TensorSpec(field, name, shape, required)


_EMBD = _spec("token_embd", "token_embd.weight", "vocab_size", "dim")
_OUTPUT_NORM = _spec("output_norm", "output_norm.weight", "dim")
_OUTPUT = _spec("output", "output.weight", "vocab_size", "dim", required=False)  # absent → tied

GLOBAL_TENSORS: dict[str, tuple[TensorSpec, ...]] = {
    "llama": (_EMBD, _OUTPUT_NORM, _OUTPUT),
    "qwen2": (_EMBD, _OUTPUT_NORM, _OUTPUT),
    "phi3": (_EMBD, _OUTPUT_NORM, _OUTPUT),
    "gpt2": (
        _EMBD,
        _spec("pos_embd", "position_embd.weight", "context_length", "dim"),
        _OUTPUT_NORM,
        _spec("output_norm_bias", "output_norm.bias", "dim"),
        _OUTPUT,
    ),
}


def _llama_layer(biases_required: bool) -> tuple[TensorSpec, ...]:
    b = biases_required
    return (
        _spec("attn_norm", "blk.{i}.attn_norm.weight", "dim"),
        _spec("wq", "blk.{i}.attn_q.weight", "q_dim", "dim"),
        _spec("wk", "blk.{i}.attn_k.weight", "kv_dim", "dim"),
        _spec("wv", "blk.{i}.attn_v.weight", "kv_dim", "dim"),
        _spec("bq", "blk.{i}.attn_q.bias", "q_dim", required=b),
        _spec("bk", "blk.{i}.attn_k.bias", "kv_dim", required=b),
        _spec("bv", "blk.{i}.attn_v.bias", "kv_dim", required=b),
        _spec("wo", "blk.{i}.attn_output.weight", "dim", "q_dim"),
        _spec("bo", "blk.{i}.attn_output.bias", "dim", required=False),
        _spec("ffn_norm", "blk.{i}.ffn_norm.weight", "dim"),
        _spec("w_gate", "blk.{i}.ffn_gate.weight", "hidden_dim", "dim"),
        _spec("w_up", "blk.{i}.ffn_up.weight", "hidden_dim", "dim"),
        _spec("w_down", "blk.{i}.ffn_down.weight", "dim", "hidden_dim"),
    )


LAYER_TENSORS: dict[str, tuple[TensorSpec, ...]] = {
    "llama": _llama_layer(biases_required=False),  # llama.cpp accepts optional Q/K/V/O biases
    "qwen2": _llama_layer(biases_required=True),
    "phi3": (
        _spec("attn_norm", "blk.{i}.attn_norm.weight", "dim"),
        _spec("wqkv", "blk.{i}.attn_qkv.weight", "qkv_dim", "dim"),
        _spec("wo", "blk.{i}.attn_output.weight", "dim", "q_dim"),
        _spec("ffn_norm", "blk.{i}.ffn_norm.weight", "dim"),
        _spec("w_gate_up", "blk.{i}.ffn_up.weight", "ffn_in_dim", "dim"),
        _spec("w_down", "blk.{i}.ffn_down.weight", "dim", "hidden_dim"),
    ),
    "gpt2": (
        _spec("attn_norm", "blk.{i}.attn_norm.weight", "dim"),
        _spec("attn_norm_bias", "blk.{i}.attn_norm.bias", "dim"),
        _spec("wqkv", "blk.{i}.attn_qkv.weight", "qkv_dim", "dim"),
        _spec("bqkv", "blk.{i}.attn_qkv.bias", "qkv_dim"),
        _spec("wo", "blk.{i}.attn_output.weight", "dim", "q_dim"),
        _spec("bo", "blk.{i}.attn_output.bias", "dim"),
        _spec("ffn_norm", "blk.{i}.ffn_norm.weight", "dim"),
        _spec("ffn_norm_bias", "blk.{i}.ffn_norm.bias", "dim"),
        _spec("w_up", "blk.{i}.ffn_up.weight", "hidden_dim", "dim"),
        _spec("b_up", "blk.{i}.ffn_up.bias", "hidden_dim"),
        _spec("w_down", "blk.{i}.ffn_down.weight", "dim", "hidden_dim"),
        _spec("b_down", "blk.{i}.ffn_down.bias", "dim"),
    ),
}

# tensors `ModelConfig.from_gguf` reads itself (RoPE frequency factors)
CONFIG_TENSORS = frozenset({"rope_factors_short.weight", "rope_factors_long.weight", "rope_freqs.weight"})


def expected_shape(spec: TensorSpec, config: object) -> tuple[int, ...]:
    return tuple(int(getattr(config, attr)) for attr in spec.shape)
