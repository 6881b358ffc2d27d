"""`load_tokenizer`: build the right tokenizer from a GGUF file's `tokenizer.ggml.*` metadata alone."""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .base import Tokenizer
from .errors import TokenizerMetadataError, UnsupportedTokenizerError
from .pretokenize import get_pretokenizer
from .vocab import EOG_TEXTS, EOT_TEXTS, TokenType, Vocab

logger = logging.getLogger(__name__)

_PREFIX = "tokenizer.ggml."
_TYPE_VALUES = frozenset(int(t) for t in TokenType)


def load_tokenizer(source: str | os.PathLike | Mapping[str, Any] | Any) -> Tokenizer:
    """A tokenizer from a GGUF path, an open `GGUFFile` (anything with `.metadata`) or a metadata mapping."""
    if isinstance(source, Mapping):
        vocab = read_vocab(source)
    elif hasattr(source, "metadata"):
        vocab = read_vocab(source.metadata)
    else:
        from gguf_loader.reader import open_gguf

        with open_gguf(source) as gguf:  # arrays are views of the mapping: copy them before it closes
            vocab = read_vocab(gguf.metadata)
    lstrip, rstrip = _strip_flags(vocab)
    if vocab.model == "gpt2":
        from .bpe import BPETokenizer

        return BPETokenizer(vocab, lstrip, rstrip)
    from .spm import SPMTokenizer

    return SPMTokenizer(vocab, lstrip, rstrip)


def read_vocab(metadata: Mapping[str, Any]) -> Vocab:
    """Check and collect the tokenizer keys; defaults follow llama.cpp."""
    model = _get(metadata, "model", str, required=True)
    if model not in ("gpt2", "llama"):
        raise UnsupportedTokenizerError(f"{_PREFIX}model = {model!r}: only 'gpt2' (BPE) and 'llama' (SPM)")
    tokens = _get(metadata, "tokens", list, required=True)
    n = len(tokens)
    if n == 0 or not all(isinstance(t, str) for t in tokens):
        raise TokenizerMetadataError(f"{_PREFIX}tokens must be a non-empty list of strings")
    types = _array(metadata, "token_type", n, int) or [TokenType.NORMAL] * n
    scores = _array(metadata, "scores", n, float)
    merges = None
    pre = _get(metadata, "pre", str) or ""
    if model == "gpt2":
        merges = _get(metadata, "merges", list, required=True)
        if not all(isinstance(m, str) for m in merges):
            raise TokenizerMetadataError(f"{_PREFIX}merges must be a list of strings")
        add_bos_default, add_space_prefix = get_pretokenizer(pre).add_bos, False
        default_ids: dict[str, int | None] = {}
    else:
        add_bos_default, add_space_prefix = True, True
        default_ids = {"bos": 1, "eos": 2, "unknown": 0}

    def special(name: str) -> int | None:
        value = _get(metadata, f"{name}_token_id", int)
        if value is None:
            value = default_ids.get(name)
        if value is not None and not 0 <= value < n:
            logger.warning(
                "%s%s_token_id = %d is outside the vocabulary of %d; ignored", _PREFIX, name, value, n
            )
            return None
        return value

    types = [t if t in _TYPE_VALUES else TokenType.UNDEFINED for t in types]  # as llama.cpp
    eot = special("eot")
    if eot is None:
        by_text = {t: i for i, t in enumerate(tokens) if t in EOT_TEXTS}
        eot = next((by_text[t] for t in EOT_TEXTS if t in by_text), None)
    for i, text in enumerate(tokens):  # llama.cpp makes end-of-generation tokens control tokens
        if (i == eot or text in EOG_TEXTS) and types[i] != TokenType.CONTROL:
            types[i] = TokenType.CONTROL
    add_bos = _get(metadata, "add_bos_token", bool)
    add_eos = _get(metadata, "add_eos_token", bool)
    prefix = _get(metadata, "add_space_prefix", bool)
    return Vocab(
        model=model,
        pre=pre,
        tokens=tokens,
        types=types,
        scores=scores,
        merges=merges,
        bos_id=special("bos"),
        eos_id=special("eos"),
        eot_id=eot,
        eom_id=special("eom"),
        unk_id=special("unknown"),
        pad_id=special("padding"),
        add_bos=add_bos_default if add_bos is None else add_bos,
        add_eos=bool(add_eos),
        add_space_prefix=add_space_prefix if prefix is None else prefix,
        chat_template=_chat_template(metadata),
        model_name=name.lower() if isinstance(name := metadata.get("general.name"), str) else "",
    )


_KIND_NAMES = {int: "an integer", str: "a string", bool: "a boolean", list: "a list"}


def _get(metadata: Mapping[str, Any], name: str, kind: type, required: bool = False) -> Any:
    key = _PREFIX + name
    if key not in metadata:
        if required:
            raise TokenizerMetadataError(f"{key} is missing")
        return None
    value = metadata[key]
    if kind is int and isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_):
        return int(value)
    if kind is bool and isinstance(value, bool | np.bool_):
        return bool(value)
    if kind in (str, list) and isinstance(value, kind):
        return value
    raise TokenizerMetadataError(
        f"{key} must be {_KIND_NAMES[kind]}, got {type(value).__name__} {value!r:.60}"
    )


def _array(metadata: Mapping[str, Any], name: str, n_tokens: int, kind: type) -> list | None:
    key = _PREFIX + name
    if key not in metadata:
        return None
    value = metadata[key]
    if not isinstance(value, list | np.ndarray) or np.ndim(value) != 1:
        raise TokenizerMetadataError(f"{key} must be a 1-D array, got {type(value).__name__}")
    values = value.tolist() if isinstance(value, np.ndarray) else value
    if len(values) < n_tokens:
        raise TokenizerMetadataError(f"{key} has {len(values)} entries for {n_tokens} tokens")
    try:
        return [kind(v) for v in values[:n_tokens]]
    except (TypeError, ValueError, OverflowError):
        raise TokenizerMetadataError(f"{key} must hold numbers ({kind.__name__})") from None


def _chat_template(metadata: Mapping[str, Any]) -> str | None:
    value = metadata.get("tokenizer.chat_template")
    if value is not None and not isinstance(value, str):
        raise TokenizerMetadataError(f"tokenizer.chat_template must be a string, got {type(value).__name__}")
    return value or None


def _strip_flags(vocab: Vocab) -> tuple[set[int], set[int]]:
    """Per-token lstrip/rstrip flags llama.cpp sets by model name (GGUF files don't carry them)."""
    if "phi-3" not in vocab.model_name and "phi3" not in vocab.model_name:
        return set(), set()
    kinds = (TokenType.CONTROL, TokenType.UNKNOWN, TokenType.USER_DEFINED)
    keep = {"<unk>", "<s>", "<|endoftext|>"}
    rstrip = {
        i
        for i, (t, k) in enumerate(zip(vocab.tokens, vocab.types, strict=True))
        if k in kinds and t not in keep
    }
    return set(), rstrip
