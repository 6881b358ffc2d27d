"""Architecture detection and hyper-parameters: `ModelConfig.from_gguf(gguf)`.

Supported: ``llama``, ``qwen2``, ``phi3``, ``gpt2``. Values come from the ``{arch}.*`` keys with the
defaults llama.cpp applies when a key is absent (``head_count_kv`` = ``head_count``, RoPE base 10000,
``rope.dimension_count`` = ``head_dim``, original context = context). The per-architecture tensor
tables live in `tensor_tables`; `load_weights` (re-exported here) builds `ModelWeights` from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ArchitectureError
from .weights import LayerWeights, ModelWeights, load_weights

if TYPE_CHECKING:
    from .reader import GGUFFile

__all__ = ["SUPPORTED_ARCHITECTURES", "ArchSpec", "ModelConfig", "RopeScaling", "LayerWeights",
           "ModelWeights", "load_weights"]


@dataclass(frozen=True)
class ArchSpec:
    """What distinguishes one architecture's forward pass."""

    norm: str  # "rmsnorm" | "layernorm"
    activation: str  # "swiglu" | "gelu"
    rope: str  # "normal" (adjacent pairs, llama.cpp's permuted Q/K) | "neox" (halves) | "none"
    eps_key: str  # the norm-epsilon key suffix
    learned_pos: bool = False


ARCH_SPECS: dict[str, ArchSpec] = {
    "llama": ArchSpec("rmsnorm", "swiglu", "normal", "attention.layer_norm_rms_epsilon"),
    "qwen2": ArchSpec("rmsnorm", "swiglu", "neox", "attention.layer_norm_rms_epsilon"),
    "phi3": ArchSpec("rmsnorm", "swiglu", "neox", "attention.layer_norm_rms_epsilon"),
    "gpt2": ArchSpec("layernorm", "gelu", "none", "attention.layer_norm_epsilon", learned_pos=True),
}
SUPPORTED_ARCHITECTURES = tuple(ARCH_SPECS)
DEFAULT_NORM_EPS = 1e-5  # llama.cpp requires the key; HF's configs default to 1e-5 (1e-6 for qwen2)


@dataclass(frozen=True)
class RopeScaling:
    """Per-pair RoPE frequency factors: the inverse frequency of pair i is divided by factor[i].

    Phi-3 LongRoPE: ``rope_factors_short``/``rope_factors_long`` tensors; llama.cpp uses the long ones
    when the per-sequence context exceeds ``original_context_length``. Llama-3.1 ``rope_freqs``: one
    table (short == long). ``attn_factor`` scales cos/sin (key ``{arch}.rope.scaling.attn_factor``).
    """

    short_factors: tuple[float, ...]
    long_factors: tuple[float, ...]
    original_context_length: int
    attn_factor: float = 1.0

    def factors(self, n_ctx: int) -> tuple[float, ...]:
        """The factors llama.cpp applies for a per-sequence context of ``n_ctx`` tokens."""
        return self.long_factors if n_ctx > self.original_context_length else self.short_factors


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of one model. ``head_dim`` defaults to dim // n_heads (0 = derive)."""

    arch: str
    n_layers: int
    dim: int
    hidden_dim: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    context_length: int
    norm_eps: float
    norm: str
    activation: str
    rope: str
    rope_theta: float = 10000.0
    rope_dim: int = 0  # rotated dims per head; 0 = head_dim
    head_dim: int = 0
    rope_scaling: RopeScaling | None = None
    rope_freq_scale: float = 1.0  # linear position scaling (1 / rope.scaling.factor)
    tied_embeddings: bool = False
    qkv_bias: bool = False
    learned_pos: bool = False
    sliding_window: int | None = None  # phi3: attention window in tokens (llama.cpp's n_swa)

    def __post_init__(self) -> None:
        if self.head_dim == 0 and self.n_heads > 0:
            object.__setattr__(self, "head_dim", self.dim // self.n_heads)
        if self.rope_dim == 0:
            object.__setattr__(self, "rope_dim", self.head_dim)
        for name in ("n_layers", "dim", "hidden_dim", "n_heads", "n_kv_heads", "vocab_size", "context_length",
                     "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ArchitectureError(f"{self.arch}: {name} must be a positive integer, got {value!r}")
        if self.n_heads % self.n_kv_heads:
            raise ArchitectureError(f"{self.arch}: n_heads {self.n_heads} is not a multiple of "
                                    f"n_kv_heads {self.n_kv_heads}")
        if self.rope != "none" and (self.rope_dim % 2 or not 0 < self.rope_dim <= self.head_dim):
            raise ArchitectureError(f"{self.arch}: rope_dim {self.rope_dim} must be even and in "
                                    f"(0, head_dim {self.head_dim}]")
        if self.rope_scaling is not None and len(self.rope_scaling.short_factors) != self.rope_dim // 2:
            raise ArchitectureError(f"{self.arch}: {len(self.rope_scaling.short_factors)} RoPE factors, "
                                    f"expected rope_dim / 2 = {self.rope_dim // 2}")
        if not (self.norm_eps > 0 and math.isfinite(self.norm_eps)):
            raise ArchitectureError(f"{self.arch}: norm_eps must be positive, got {self.norm_eps!r}")

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def qkv_dim(self) -> int:
        return self.q_dim + 2 * self.kv_dim

    @property
    def n_rep(self) -> int:
        """Query heads per KV head (grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    @property
    def ffn_in_dim(self) -> int:
        """Rows of the FFN input projection(s): gate|up (2*hidden) for swiglu, hidden for gelu."""
        return 2 * self.hidden_dim if self.activation == "swiglu" else self.hidden_dim

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> ModelConfig:
        """Read the architecture and its hyper-parameters; ArchitectureError names the key at fault."""
        meta = gguf.metadata
        arch = meta.get("general.architecture")
        if not isinstance(arch, str):
            raise ArchitectureError(f"{gguf.path}: general.architecture is missing or not a string")
        spec = ARCH_SPECS.get(arch)
        if spec is None:
            raise ArchitectureError(f"{gguf.path}: unsupported architecture {arch!r}; "
                                    f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
        keys = _Keys(meta, arch, str(gguf.path))
        dim = keys.int("embedding_length")
        n_heads = keys.int("attention.head_count")
        head_dim = keys.int("attention.key_length", dim // n_heads if n_heads > 0 else 0)
        value_dim = keys.int("attention.value_length", head_dim)
        if value_dim != head_dim:
            raise ArchitectureError(f"{gguf.path}: {arch}.attention.value_length {value_dim} != key_length "
                                    f"{head_dim} is not supported")
        context_length = keys.int("context_length")
        default_eps = 1e-6 if arch == "qwen2" else DEFAULT_NORM_EPS
        scaling_type = keys.str("rope.scaling.type", "none")
        if scaling_type not in ("none", "linear"):
            raise ArchitectureError(f"{gguf.path}: {arch}.rope.scaling.type {scaling_type!r} is not "
                                    "supported (supported: none, linear, and Phi-3 LongRoPE factors)")
        factor = keys.float("rope.scaling.factor", 0.0) if scaling_type == "linear" else 0.0
        return cls(
            arch=arch,
            n_layers=keys.int("block_count"),
            dim=dim,
            hidden_dim=keys.int("feed_forward_length"),
            n_heads=n_heads,
            n_kv_heads=keys.int("attention.head_count_kv", n_heads),
            vocab_size=_vocab_size(gguf, keys),
            context_length=context_length,
            norm_eps=keys.float(spec.eps_key, default_eps),
            norm=spec.norm,
            activation=spec.activation,
            rope=spec.rope,
            rope_theta=keys.float("rope.freq_base", 10000.0),
            rope_dim=keys.int("rope.dimension_count", head_dim) if spec.rope != "none" else head_dim,
            head_dim=head_dim,
            rope_scaling=_rope_scaling(gguf, keys, context_length),
            rope_freq_scale=1.0 / factor if factor else 1.0,
            tied_embeddings="token_embd.weight" in gguf.tensors and "output.weight" not in gguf.tensors,
            qkv_bias="blk.0.attn_q.bias" in gguf.tensors or "blk.0.attn_qkv.bias" in gguf.tensors,
            learned_pos=spec.learned_pos,
            sliding_window=keys.int("attention.sliding_window", 0) or None,
        )


class _Keys:
    """Typed access to ``{arch}.*`` keys; a wrong type or a missing required key names the key."""

    _REQUIRED = object()

    def __init__(self, meta: dict[str, Any], arch: str, where: str) -> None:
        self.meta, self.arch, self.where = meta, arch, where

    def _get(self, suffix: str, default: Any, kinds: tuple[type, ...], what: str) -> Any:
        key = f"{self.arch}.{suffix}"
        if key not in self.meta:
            if default is self._REQUIRED:
                raise ArchitectureError(f"{self.where}: required key {key} is missing")
            return default
        value = self.meta[key]
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ArchitectureError(f"{self.where}: {key} must be {what}, got {type(value).__name__} "
                                    f"{_short(value)} (per-layer arrays are not supported)")
        return value

    def int(self, suffix: str, default: Any = _REQUIRED) -> int:
        return self._get(suffix, default, (int,), "an integer")

    def float(self, suffix: str, default: Any = _REQUIRED) -> float:
        return float(self._get(suffix, default, (int, float), "a number"))

    def str(self, suffix: str, default: Any = _REQUIRED) -> str:
        return self._get(suffix, default, (str,), "a string")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _vocab_size(gguf: GGUFFile, keys: _Keys) -> int:
    """``{arch}.vocab_size``, else the tokenizer's token count, else the embedding's rows."""
    size = keys.int("vocab_size", 0)
    if size:
        return size
    tokens = gguf.metadata.get("tokenizer.ggml.tokens")
    if isinstance(tokens, list) and tokens:
        return len(tokens)
    embd = gguf.tensors.get("token_embd.weight")
    if embd is None or len(embd.shape) != 2:
        raise ArchitectureError(f"{gguf.path}: cannot tell the vocabulary size: no {keys.arch}.vocab_size, "
                                "no tokenizer.ggml.tokens and no 2-D token_embd.weight")
    return embd.shape[0]


def _rope_scaling(gguf: GGUFFile, keys: _Keys, context_length: int) -> RopeScaling | None:
    """Phi-3 LongRoPE factor tensors or a Llama-3 ``rope_freqs`` table, else None."""
    original = keys.int("rope.scaling.original_context_length", context_length)
    attn_factor = keys.float("rope.scaling.attn_factor", 1.0)
    names = ("rope_factors_short.weight", "rope_factors_long.weight")
    if any(n in gguf.tensors for n in names):
        short, long = (_factors(gguf, n) for n in names)
        if len(short) != len(long):
            raise ArchitectureError(f"{gguf.path}: rope_factors_short has {len(short)} values, "
                                    f"rope_factors_long {len(long)}")
        return RopeScaling(short, long, original, attn_factor)
    if "rope_freqs.weight" in gguf.tensors:
        freqs = _factors(gguf, "rope_freqs.weight")
        return RopeScaling(freqs, freqs, original, attn_factor)
    return None


def _factors(gguf: GGUFFile, name: str) -> tuple[float, ...]:
    info = gguf.tensors.get(name)
    if info is None:
        raise ArchitectureError(f"{gguf.path}: tensor {name} is missing (its short/long twin is present)")
    if len(info.shape) != 1:
        raise ArchitectureError(f"{gguf.path}: {name} must be 1-D, has shape {info.shape}")
    return tuple(float(v) for v in gguf.dequantize(name))
