"""How much memory a model needs: weights under a compute dtype, KV cache, workspace; file statistics.

Weights: every 2-D+ tensor at the compute dtype's width (``native`` keeps the file's quantised
bytes, for a backend that dequantises on the device); 1-D tensors (norms, biases, RoPE factors) stay
float32. Tied embeddings are counted once. The KV cache stores K and V of ``kv_dim`` values per layer
and token in the compute dtype (f16 under ``native``). The workspace is one forward step over
``batch`` sequences of up to `PREFILL_CHUNK` tokens: activations, float32 attention scores over the
whole context, and float32 logits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .arch import ModelConfig
    from .reader import GGUFFile

DTYPE_BYTES = {"f32": 4, "f16": 2, "bf16": 2}
COMPUTE_DTYPES = (*DTYPE_BYTES, "native")
PREFILL_CHUNK = 512  # prompt tokens per sequence in one forward step


@dataclass(frozen=True)
class MemoryEstimate:
    compute_dtype: str
    ctx: int
    batch: int
    n_params: int
    weight_bytes: int
    kv_bytes_per_token: int  # one token of one sequence, all layers, K and V
    kv_bytes: int  # ctx * batch tokens
    workspace_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.kv_bytes + self.workspace_bytes

    @property
    def bytes_per_param(self) -> float:
        """Weight bytes per parameter under the compute dtype."""
        return self.weight_bytes / self.n_params if self.n_params else 0.0

    def to_dict(self) -> dict[str, int | float | str]:
        return {**asdict(self), "total_bytes": self.total_bytes, "bytes_per_param": self.bytes_per_param}


def parameter_count(gguf: GGUFFile) -> int:
    """Elements in all tensors of the file (tied embeddings count once, as stored)."""
    return sum(info.n_elements for info in gguf.tensors.values())


def tensor_bytes(gguf: GGUFFile) -> int:
    """Bytes of tensor data in the file, as stored."""
    return sum(info.nbytes for info in gguf.tensors.values())


def type_histogram(gguf: GGUFFile) -> dict[str, dict[str, int]]:
    """``{type name: {"count", "n_elements", "nbytes"}}`` over the file's tensors, largest first."""
    hist: dict[str, dict[str, int]] = {}
    for info in gguf.tensors.values():
        entry = hist.setdefault(info.ggml_type.name, {"count": 0, "n_elements": 0, "nbytes": 0})
        entry["count"] += 1
        entry["n_elements"] += info.n_elements
        entry["nbytes"] += info.nbytes
    return dict(sorted(hist.items(), key=lambda item: (-item[1]["nbytes"], item[0])))


def weight_bytes(gguf: GGUFFile, compute_dtype: str) -> int:
    """Device bytes of all weights: matrices at ``compute_dtype`` (or as stored), vectors float32."""
    _check_dtype(compute_dtype)
    total = 0
    for info in gguf.tensors.values():
        if len(info.shape) == 1:
            total += 4 * info.n_elements
        elif compute_dtype == "native":
            total += info.nbytes
        else:
            total += DTYPE_BYTES[compute_dtype] * info.n_elements
    return total


def kv_bytes_per_token(config: ModelConfig, compute_dtype: str) -> int:
    return 2 * config.n_layers * config.kv_dim * _act_bytes(compute_dtype)  # K and V


def workspace_bytes(config: ModelConfig, compute_dtype: str, ctx: int, batch: int) -> int:
    """Scratch for one forward step: activations, attention scores and logits."""
    chunk = min(ctx, PREFILL_CHUNK)
    tokens = batch * chunk
    # x, normed h, qkv, attention output, FFN input projection(s), FFN hidden
    per_token = 2 * config.dim + config.qkv_dim + config.q_dim + config.ffn_in_dim + config.hidden_dim
    activations = tokens * per_token * _act_bytes(compute_dtype)
    scores = batch * config.n_heads * chunk * ctx * 4  # float32 softmax over the whole context
    logits = batch * config.vocab_size * 4
    return activations + scores + logits


def estimate(
    config: ModelConfig, gguf: GGUFFile, compute_dtype: str = "f16", ctx: int | None = None, batch: int = 1
) -> MemoryEstimate:
    """Memory for serving ``batch`` sequences of up to ``ctx`` tokens (default: the model's context)."""
    _check_dtype(compute_dtype)
    ctx = config.context_length if ctx is None else ctx
    if ctx <= 0 or batch <= 0:
        raise ValueError(f"ctx ({ctx}) and batch ({batch}) must be positive")
    per_token = kv_bytes_per_token(config, compute_dtype)
    return MemoryEstimate(
        compute_dtype=compute_dtype,
        ctx=ctx,
        batch=batch,
        n_params=parameter_count(gguf),
        weight_bytes=weight_bytes(gguf, compute_dtype),
        kv_bytes_per_token=per_token,
        kv_bytes=per_token * ctx * batch,
        workspace_bytes=workspace_bytes(config, compute_dtype, ctx, batch),
    )


def _act_bytes(compute_dtype: str) -> int:
    return DTYPE_BYTES.get(compute_dtype, 2)  # native weights compute in f16


def _check_dtype(compute_dtype: str) -> None:
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute dtype {compute_dtype!r} not in {COMPUTE_DTYPES}")
