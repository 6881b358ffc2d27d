"""Hand-built GGUF bytes for reader tests: each piece is `struct.pack`ed, so any field can lie."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from gguf_loader.constants import BLOCK_SIZES, GGMLType, GGUFValueType

V = GGUFValueType
_SCALAR_FORMATS = {
    V.UINT8: "<B",
    V.INT8: "<b",
    V.UINT16: "<H",
    V.INT16: "<h",
    V.UINT32: "<I",
    V.INT32: "<i",
    V.FLOAT32: "<f",
    V.BOOL: "<B",
    V.UINT64: "<Q",
    V.INT64: "<q",
    V.FLOAT64: "<d",
}


def string(text: str | bytes, length: int | None = None) -> bytes:
    """A GGUF string; `length` overrides the length prefix."""
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data) if length is None else length) + data


def value(vtype: int, val: Any) -> bytes:
    """The encoding of `val` as `vtype`; arrays are `(element_type, items)`."""
    if vtype == V.STRING:
        return string(val)
    if vtype == V.ARRAY:
        etype, items = val
        return array(etype, items)
    return struct.pack(_SCALAR_FORMATS[V(vtype)], val)


def array(etype: int, items: Sequence[Any], count: int | None = None) -> bytes:
    """An array payload (element type, count, elements); `count` overrides the count field."""
    body = b"".join(value(etype, item) for item in items)
    return struct.pack("<IQ", etype, len(items) if count is None else count) + body


def kv(key: str | bytes, vtype: int, val: Any = None, payload: bytes | None = None) -> bytes:
    """One metadata entry; `payload` replaces the encoded value verbatim."""
    return string(key) + struct.pack("<I", vtype) + (value(vtype, val) if payload is None else payload)


def tensor_info(name: str | bytes, dims: Sequence[int], ggml_type: int, offset: int) -> bytes:
    return (
        string(name)
        + struct.pack("<I", len(dims))
        + struct.pack(f"<{len(dims)}Q", *dims)
        + struct.pack("<I", ggml_type)
        + struct.pack("<Q", offset)
    )


def gguf_bytes(
    kvs: Sequence[bytes] = (),
    infos: Sequence[bytes] = (),
    data: bytes = b"",
    *,
    version: int = 3,
    alignment: int = 32,
    n_kv: int | None = None,
    n_tensors: int | None = None,
    magic: bytes = b"GGUF",
) -> bytes:
    """Header + metadata + tensor infos, padded to `alignment`, + data. Counts may be overridden."""
    head = magic + struct.pack(
        "<IQQ", version, len(infos) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv
    )
    body = head + b"".join(kvs) + b"".join(infos)
    pad = -len(body) % alignment if data else 0
    return body + b"\0" * pad + data


# Long enough (> 4 KiB of UTF-8) to take the reader's in-place decoding path.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}</s>{% endfor %} — ünïcödé ✓ 日本\n" * 60
)


def small_model(seed: int = 0) -> bytes:
    """A small valid file with every value kind and seven tensors of five types (~28 KB)."""
    rng = np.random.default_rng(seed)
    tokens = ["<s>", "</s>", "a", "b", "ab", "héllo", "日本", " ", "\n", "▁x"]
    kvs = [
        kv("general.architecture", V.STRING, "llama"),
        kv("general.alignment", V.UINT32, 32),
        kv("llama.block_count", V.UINT32, 1),
        kv("llama.rope.freq_base", V.FLOAT32, 10000.0),
        kv("llama.attention.layer_norm_rms_epsilon", V.FLOAT64, 1e-5),
        kv("general.flag", V.BOOL, 1),
        kv("general.neg", V.INT64, -7),
        kv("tokenizer.ggml.tokens", V.ARRAY, (V.STRING, tokens)),
        kv("tokenizer.ggml.scores", V.ARRAY, (V.FLOAT32, [float(i) / 4 for i in range(len(tokens))])),
        kv("tokenizer.ggml.token_type", V.ARRAY, (V.INT32, [1] * len(tokens))),
        kv("general.nested", V.ARRAY, (V.ARRAY, [(V.UINT16, [1, 2, 3]), (V.STRING, ["x", "yz"])])),
        kv("general.bools", V.ARRAY, (V.BOOL, [0, 1, 1])),
        kv("tokenizer.chat_template", V.STRING, CHAT_TEMPLATE),
    ]
    specs = [  # name, dims (ggml order), type
        ("token_embd.weight", (32, 10), GGMLType.Q8_0),
        ("blk.0.attn_norm.weight", (32,), GGMLType.F32),
        ("blk.0.ffn_up.weight", (256, 2), GGMLType.Q4_K),
        ("blk.0.ffn_down.weight", (64, 3), GGMLType.F16),
        ("output.weight", (256, 3), GGMLType.Q6_K),
        ("blk.0.attn_q.weight", (64, 64), GGMLType.F32),
        ("blk.0.attn_k.weight", (256, 16), GGMLType.Q8_0),
    ]
    infos, chunks, offset = [], [], 0
    for name, dims, gtype in specs:
        nbytes = tensor_nbytes(dims, gtype)
        infos.append(tensor_info(name, dims, gtype, offset))
        chunk = rng.integers(0, 256, size=nbytes, dtype=np.uint8).tobytes()
        chunk += b"\0" * (-len(chunk) % 32)
        chunks.append(chunk)
        offset += len(chunk)
    return gguf_bytes(kvs, infos, b"".join(chunks))


def tensor_nbytes(dims: Sequence[int], gtype: GGMLType) -> int:
    block_elems, block_bytes = BLOCK_SIZES[gtype]
    return int(np.prod(dims)) // block_elems * block_bytes
