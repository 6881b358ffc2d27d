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
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .synthetic_vocab import VOCAB_FILES, byte_vocab, vocab_kv, vocab_path

__all__ = ["ARCHITECTURES", "BYTE_VOCAB", "DTYPES", "PRESETS", "VOCAB_FILES", "write_synthetic_model"]

ARCHITECTURES = ("llama", "qwen2", "phi3", "gpt2")
BYTE_VOCAB = "bytes"  # pass as vocab= for the built-in byte-level BPE vocab (no file needed)
DTYPES = ("f32", "f16", "q8_0")
_FILE_TYPE = {"f32": 0, "f16": 1, "q8_0": 7}  # llama_ftype: ALL_F32, MOSTLY_F16, MOSTLY_Q8_0
_QK8_0 = 32
# real shapes for GPU benchmarks (random weights; pair with vocab="bytes" where the vocab file is absent)
PRESETS: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": dict(arch="qwen2", n_layers=24, dim=896, n_heads=14, n_kv_heads=2, hidden_dim=4864,
                         vocab_size=151936, context_length=32768, tied=True),
    "phi-3-mini": dict(arch="phi3", n_layers=32, dim=3072, n_heads=32, n_kv_heads=32, hidden_dim=8192,
                       vocab_size=32064, context_length=4096),
    "smollm2-135m": dict(arch="llama", n_layers=30, dim=576, n_heads=9, n_kv_heads=3, hidden_dim=1536,
                         vocab_size=49152, context_length=8192, tied=True, rope_theta=1e5),
}
_INT8_STD = float(np.arange(-128, 128).std())  # std of a uniform random int8 (~73.9)


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
        tokenizer_kv = byte_vocab(vocab_size or 512)
    else:
        tokenizer_kv = vocab_kv(vocab_path(arch, vocab))
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
    for data in _tensor_data(tensors, dtype, seed, scale):
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


def _tensor_data(tensors: list[_Tensor], dtype: str, seed: int, scale: float) -> Iterator[np.ndarray]:
    """The stored values (or Q8_0 bytes) of each tensor, in order, drawn from one seeded generator."""
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
            stored = _random_matrix(rng, t.shape, dtype, scale)
            if t.name == "token_embd.weight":
                embedding = stored
            yield stored


def _random_matrix(rng: np.random.Generator, shape: tuple[int, ...], dtype: str, scale: float) -> np.ndarray:
    """Uniform random int8 levels times one step ``d`` (std = scale): the same values in every dtype.

    Random bytes are ~50x faster to draw than normals, so real-size models take seconds; f32 and
    q8_0 files of one seed hold identical values (f16 rounds each product to half precision).
    """
    q = np.frombuffer(rng.bytes(math.prod(shape)), dtype=np.int8).reshape(shape)  # [rows, cols]
    d = np.float16(scale / _INT8_STD)
    if dtype == "q8_0":
        blocks = np.empty((q.size // _QK8_0, 2 + _QK8_0), dtype=np.uint8)  # [n_blocks, 34]: f16 d, 32 x int8
        blocks[:, :2] = np.frombuffer(d.tobytes(), dtype=np.uint8)
        blocks[:, 2:] = q.reshape(-1, _QK8_0).view(np.uint8)
        return blocks.reshape(shape[0], -1)  # [rows, cols / 32 * 34]
    levels = np.arange(256, dtype=np.uint8).view(np.int8).astype(np.float32) * np.float32(d)  # [256]
    table = levels.astype(np.float16 if dtype == "f16" else np.float32)
    return np.take(table, q.view(np.uint8))  # int8 level -> value, [rows, cols]


def _nbytes(shape: tuple[int, ...], qtype: Any, gguf: Any) -> int:
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    return math.prod(shape) // block_elems * block_bytes


def main(argv: list[str] | None = None) -> int:
    """``python -m gguf_loader.synthetic OUT PRESET [--dtype f16] [--vocab bytes|PATH] [--layers N]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m gguf_loader.synthetic", description=main.__doc__)
    parser.add_argument("out")
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("--dtype", default="f16", choices=DTYPES)
    parser.add_argument("--vocab", default=BYTE_VOCAB, help="a vocab GGUF to copy, or 'bytes' (default)")
    parser.add_argument("--layers", type=int, default=None, help="override the preset's layer count")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    options = dict(PRESETS[args.preset])
    arch = options.pop("arch")
    if args.layers:
        options["n_layers"] = args.layers
    if args.vocab != BYTE_VOCAB:
        options.pop("vocab_size")
    started = time.perf_counter()
    path = write_synthetic_model(args.out, arch, vocab=args.vocab, dtype=args.dtype, seed=args.seed,
                                 **options)
    print(f"{path}: {path.stat().st_size:,} bytes in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
