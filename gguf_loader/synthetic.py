"""Random-weight GGUF models in llama.cpp's exact layout, for tests and benchmarks.

``write_synthetic_model(path, "qwen2", dim=64, ...)`` writes a complete model file — the
``{arch}.*`` hyper-parameters llama.cpp's converter writes, the tensors under llama.cpp's names and
orientations, and a tokenizer — that llama.cpp and HF transformers load. Layout facts per arch:

- llama: Q/K rows lie in llama.cpp's permuted (adjacent-pair RoPE) order — random rows need no
  permuting, and ``head_count_kv`` is always written so readers can un-permute K under GQA.
- qwen2: F32 Q/K/V biases; ``tied=True`` omits ``output.weight``.
- phi3: fused ``attn_qkv`` (rows q|k|v) and ``ffn_up`` (rows gate|up); ``original_context_length``
  below ``context_length`` adds LongRoPE ``rope_factors_{short,long}.weight`` and the attn factor.
- gpt2: ``[out, in]`` matrices, LayerNorm weights and biases, 1024 learned positions, ff = 4*dim,
  ``output.weight`` a copy of ``token_embd`` (as llama.cpp's converter writes it).

Matrices are stored as ``dtype`` (f32, f16 or q8_0); norms, biases and rope factors stay F32.
Tensors are generated and written one at a time, so real-size files (e.g. Phi-3-mini in F16) need
memory for one tensor only. Needs gguf-py (``pip install gguf``), a dev dependency.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

ARCHITECTURES = ("llama", "qwen2", "phi3", "gpt2")
# the llama.cpp vocab test file each architecture uses by default (see assets.fetch_vocab_tests)
VOCAB_FILES = {
    "llama": "ggml-vocab-llama-bpe.gguf",
    "qwen2": "ggml-vocab-qwen2.gguf",
    "phi3": "ggml-vocab-phi-3.gguf",
    "gpt2": "ggml-vocab-gpt-2.gguf",
}
BYTE_VOCAB = "bytes"  # pass as vocab= for the built-in byte-level BPE vocab (no file needed)
DTYPES = ("f32", "f16", "q8_0")
_FILE_TYPE = {"f32": 0, "f16": 1, "q8_0": 7}  # llama_ftype: ALL_F32, MOSTLY_F16, MOSTLY_Q8_0
_QK8_0 = 32


@dataclass(frozen=True)
class _Tensor:
    name: str
    shape: tuple[int, ...]  # numpy order: [rows, cols]
    kind: str  # "matrix" (stored as dtype, random), "norm" (F32 ~1), "bias" (F32 random), "copy", "factors"


def write_synthetic_model(
    path: str | Path,
    arch: str,
    *,
    n_layers: int = 2,
    dim: int = 64,
    n_heads: int = 4,
    n_kv_heads: int | None = None,
    hidden_dim: int | None = None,
    vocab: str | Path | None = None,
    vocab_size: int | None = None,
    dtype: str = "f32",
    seed: int = 0,
    context_length: int | None = None,
    tied: bool = False,
    rope_theta: float | None = None,
    norm_eps: float | None = None,
    original_context_length: int | None = None,
    scale: float = 0.02,
    name: str | None = None,
) -> Path:
    """Write a random-weight ``arch`` model to ``path`` and return the path.

    vocab: a GGUF file whose ``tokenizer.*`` keys are copied; None → the llama.cpp vocab test file
    for ``arch`` (``VOCAB_FILES``); ``"bytes"`` → a built-in byte-level BPE vocab of ``vocab_size``
    tokens (default 512; 256 bytes, ``<|endoftext|>`` = 256 as BOS/EOS/PAD, merges, reserved tokens).
    With a vocab file, ``vocab_size`` (if given) must equal its token count.
    n_kv_heads: default 2 (capped at n_heads); gpt2 always has n_kv_heads == n_heads.
    hidden_dim: default 4*dim for gpt2 (HF requires it), else 8/3*dim rounded up to a multiple of 32.
    context_length: default 1024 for gpt2, else 2048. tied: omit ``output.weight``.
    original_context_length (phi3): < context_length adds LongRoPE factors; default = context_length.
    scale: standard deviation of random matrices and biases (norm weights are 1 ± scale).
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unsupported architecture {arch!r}; supported: {', '.join(ARCHITECTURES)}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} not in {DTYPES}")
    if n_kv_heads is None:
        n_kv_heads = n_heads if arch == "gpt2" else min(2, n_heads)
    if arch == "gpt2" and n_kv_heads != n_heads:
        raise ValueError(f"gpt2 has no grouped-query attention: n_kv_heads {n_kv_heads} != n_heads {n_heads}")
    if dim % n_heads or n_heads % n_kv_heads:
        raise ValueError(f"dim {dim} / n_heads {n_heads} / n_kv_heads {n_kv_heads} do not divide evenly")
    head_dim = dim // n_heads
    if hidden_dim is None:
        hidden_dim = 4 * dim if arch == "gpt2" else -(-8 * dim // 3 // 32) * 32
    if context_length is None:
        context_length = 1024 if arch == "gpt2" else 2048
    if dtype == "q8_0" and (dim % _QK8_0 or hidden_dim % _QK8_0):
        raise ValueError(f"q8_0 needs dim ({dim}) and hidden_dim ({hidden_dim}) multiples of {_QK8_0}")

    if vocab == BYTE_VOCAB:
        tokenizer_kv = _byte_vocab(vocab_size or 512)
    else:
        tokenizer_kv = _vocab_kv(_vocab_path(arch, vocab))
    n_vocab = len(tokenizer_kv["tokenizer.ggml.tokens"][0])
    if vocab_size is not None and vocab_size != n_vocab:
        raise ValueError(f"vocab_size {vocab_size} != {n_vocab} tokens in the vocab file {vocab}")

    import gguf

    writer = gguf.GGUFWriter(None, arch)
    writer.add_name(name or f"synthetic-{arch}")
    writer.add_file_type(_FILE_TYPE[dtype])
    if dtype == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(context_length)
    writer.add_embedding_length(dim)
    writer.add_feed_forward_length(hidden_dim)
    writer.add_block_count(n_layers)
    writer.add_head_count(n_heads)
    if arch == "gpt2":
        writer.add_layer_norm_eps(1e-5 if norm_eps is None else norm_eps)
    else:
        writer.add_head_count_kv(n_kv_heads)
        writer.add_layer_norm_rms_eps((1e-6 if arch == "qwen2" else 1e-5) if norm_eps is None else norm_eps)
        writer.add_rope_freq_base(rope_theta or (1e6 if arch == "qwen2" else 1e4))
    if arch in ("llama", "phi3"):
        writer.add_rope_dimension_count(head_dim)
    if arch == "llama":
        writer.add_vocab_size(n_vocab)
    long_rope = False
    if arch == "phi3":
        original = original_context_length or context_length
        writer.add_rope_scaling_orig_ctx_len(original)
        long_rope = original < context_length
        if long_rope:
            writer.add_rope_scaling_attn_factors(
                math.sqrt(1 + math.log(context_length / original) / math.log(original)))
    for key, (value, vtype, sub_type) in tokenizer_kv.items():
        writer.add_key_value(key, value, vtype, sub_type)

    tensors = _tensor_table(arch, n_layers, dim, n_kv_heads * head_dim, hidden_dim, n_vocab,
                            context_length, tied, long_rope, head_dim)
    qtype = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
             "q8_0": gguf.GGMLQuantizationType.Q8_0}[dtype]
    for t in tensors:
        stored = qtype if t.kind in ("matrix", "copy") else gguf.GGMLQuantizationType.F32
        writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), _nbytes(t.shape, stored, gguf),
                               raw_dtype=stored)
    path = Path(path)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for data in _tensor_data(tensors, dtype, seed, scale, gguf):
        writer.write_tensor_data(data)
    writer.close()
    return path


def _tensor_table(arch: str, n_layers: int, dim: int, kv_dim: int, hidden_dim: int, n_vocab: int,
                  context_length: int, tied: bool, long_rope: bool, head_dim: int) -> list[_Tensor]:
    """Every tensor of the model in file order, named and shaped as llama.cpp's converter writes it."""
    gpt2 = arch == "gpt2"
    tensors = [_Tensor("token_embd.weight", (n_vocab, dim), "matrix")]
    if gpt2:
        tensors.append(_Tensor("position_embd.weight", (context_length, dim), "matrix"))
    if long_rope:
        tensors += [_Tensor(f"rope_factors_{w}.weight", (head_dim // 2,), "factors")
                    for w in ("long", "short")]
    for i in range(n_layers):
        p = f"blk.{i}."
        layer = [_Tensor(p + "attn_norm.weight", (dim,), "norm")]
        if arch in ("gpt2", "phi3"):
            layer.append(_Tensor(p + "attn_qkv.weight", (dim + 2 * kv_dim, dim), "matrix"))
        else:
            layer += [_Tensor(p + "attn_q.weight", (dim, dim), "matrix"),
                      _Tensor(p + "attn_k.weight", (kv_dim, dim), "matrix"),
                      _Tensor(p + "attn_v.weight", (kv_dim, dim), "matrix")]
        if arch == "qwen2":
            layer += [_Tensor(p + "attn_q.bias", (dim,), "bias"),
                      _Tensor(p + "attn_k.bias", (kv_dim,), "bias"),
                      _Tensor(p + "attn_v.bias", (kv_dim,), "bias")]
        layer += [_Tensor(p + "attn_output.weight", (dim, dim), "matrix"),
                  _Tensor(p + "ffn_norm.weight", (dim,), "norm")]
        if arch == "phi3":
            layer.append(_Tensor(p + "ffn_up.weight", (2 * hidden_dim, dim), "matrix"))
        elif gpt2:
            layer.append(_Tensor(p + "ffn_up.weight", (hidden_dim, dim), "matrix"))
        else:
            layer += [_Tensor(p + "ffn_gate.weight", (hidden_dim, dim), "matrix"),
                      _Tensor(p + "ffn_up.weight", (hidden_dim, dim), "matrix")]
        layer.append(_Tensor(p + "ffn_down.weight", (dim, hidden_dim), "matrix"))
        if gpt2:  # every gpt2 weight has a bias of its output size
            layer += [_Tensor(t.name.replace(".weight", ".bias"), t.shape[:1], "bias") for t in list(layer)]
        tensors += layer
    tensors.append(_Tensor("output_norm.weight", (dim,), "norm"))
    if gpt2:
        tensors.append(_Tensor("output_norm.bias", (dim,), "bias"))
    if not tied:
        tensors.append(_Tensor("output.weight", (n_vocab, dim), "copy" if gpt2 else "matrix"))
    return tensors


def _tensor_data(
    tensors: list[_Tensor], dtype: str, seed: int, scale: float, gguf: Any
) -> Iterator[np.ndarray]:
    """The stored bytes/values of each tensor, in order, drawn from one seeded generator."""
    rng = np.random.default_rng(seed)
    embedding: np.ndarray | None = None
    for t in tensors:
        if t.kind == "norm":
            yield (1.0 + scale * rng.standard_normal(t.shape, dtype=np.float32)).astype(np.float32)
        elif t.kind == "bias":
            yield scale * rng.standard_normal(t.shape, dtype=np.float32)
        elif t.kind == "factors":  # LongRoPE: short factors near 1, long factors growing with the pair index
            grow = 1.0 if t.name.startswith("rope_factors_short") else 8.0
            yield (1.0 + grow * np.linspace(0.0, 1.0, t.shape[0]) ** 2).astype(np.float32)
        elif t.kind == "copy":
            assert embedding is not None
            yield embedding
        else:
            values = rng.standard_normal(t.shape, dtype=np.float32)  # [rows, cols]
            values *= scale
            if dtype == "f16":
                stored = values.astype(np.float16)
            elif dtype == "q8_0":
                stored = gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q8_0)
            else:
                stored = values
            if t.name == "token_embd.weight":
                embedding = stored
            yield stored


def _nbytes(shape: tuple[int, ...], qtype: Any, gguf: Any) -> int:
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    return math.prod(shape) // block_elems * block_bytes


def _vocab_path(arch: str, vocab: str | Path | None) -> Path:
    if vocab is not None:
        return Path(vocab)
    from .assets import fetch_vocab_tests

    return fetch_vocab_tests() / VOCAB_FILES[arch]


@lru_cache(maxsize=8)
def _vocab_kv(path: Path) -> dict[str, tuple[Any, Any, Any]]:
    """``tokenizer.*`` keys of a GGUF file as ``{key: (value, type, array element type)}``."""
    import gguf

    from .reader import open_gguf

    with open_gguf(path) as vocab:
        out: dict[str, tuple[Any, Any, Any]] = {}
        for key, value in vocab.metadata.items():
            if not key.startswith("tokenizer."):
                continue
            vtype = gguf.GGUFValueType(int(vocab.metadata_types[key]))
            sub_type = vocab.array_types.get(key)
            if sub_type is not None:
                sub_type = gguf.GGUFValueType(int(sub_type))
            if isinstance(value, np.ndarray):
                value = value.tolist()
            out[key] = (value, vtype, sub_type)
    if "tokenizer.ggml.tokens" not in out:
        raise ValueError(f"{path} has no tokenizer.ggml.tokens")
    return out


def _gpt2_byte_chars() -> list[str]:
    """GPT-2's byte → printable character table (bytes_to_unicode), index = byte value."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)}
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


@lru_cache(maxsize=4)
def _byte_vocab(vocab_size: int) -> dict[str, tuple[Any, Any, Any]]:
    """A gpt2-style byte-level BPE vocab: 256 byte tokens, ``<|endoftext|>`` (id 256, BOS/EOS/PAD),
    merges of " x" and "xy" over lowercase letters, then reserved control tokens up to vocab_size."""
    import gguf

    if vocab_size < 257:
        raise ValueError(f"byte vocab needs at least 257 tokens, got {vocab_size}")
    chars = _gpt2_byte_chars()
    space = chars[ord(" ")]
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    pairs = [(space, c) for c in letters] + [(a, b) for a in letters for b in letters]
    pairs = pairs[: vocab_size - 257]
    tokens = chars + ["<|endoftext|>"] + [a + b for a, b in pairs]
    tokens += [f"<|reserved_{i}|>" for i in range(vocab_size - len(tokens))]
    normal, control = 1, 3
    types = [normal] * 256 + [control] + [normal] * len(pairs) + [control] * (vocab_size - 257 - len(pairs))
    t = gguf.GGUFValueType
    kv: dict[str, tuple[Any, Any, Any]] = {
        "tokenizer.ggml.model": ("gpt2", t.STRING, None),
        "tokenizer.ggml.pre": ("gpt-2", t.STRING, None),
        "tokenizer.ggml.tokens": (tokens, t.ARRAY, t.STRING),
        "tokenizer.ggml.token_type": (types, t.ARRAY, t.INT32),
        "tokenizer.ggml.bos_token_id": (256, t.UINT32, None),
        "tokenizer.ggml.eos_token_id": (256, t.UINT32, None),
        "tokenizer.ggml.padding_token_id": (256, t.UINT32, None),
    }
    if pairs:
        kv["tokenizer.ggml.merges"] = ([f"{a} {b}" for a, b in pairs], t.ARRAY, t.STRING)
    return kv
