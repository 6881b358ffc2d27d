"""Tokenizer metadata for synthetic models: copied from a vocab GGUF, or a built-in byte-level BPE."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

VOCAB_FILES = {
    "llama": "ggml-vocab-llama-bpe.gguf",
    "qwen2": "ggml-vocab-qwen2.gguf",
    "phi3": "ggml-vocab-phi-3.gguf",
    "gpt2": "ggml-vocab-gpt-2.gguf",
}


def vocab_path(arch: str, vocab: str | Path | None) -> Path:
    """``vocab`` as a path; None → the llama.cpp vocab test file for ``arch``."""
    if vocab is not None:
        return Path(vocab)
    from .assets import fetch_vocab_tests

    return fetch_vocab_tests() / VOCAB_FILES[arch]


@lru_cache(maxsize=8)
def vocab_kv(path: Path) -> dict[str, tuple[Any, Any, Any]]:
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
def byte_vocab(vocab_size: int) -> dict[str, tuple[Any, Any, Any]]:
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
