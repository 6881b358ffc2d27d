"""load_tokenizer: every kind of source, the metadata checks, llama.cpp's defaults."""

from __future__ import annotations

import numpy as np
import pytest

from gguf_loader.reader import open_gguf
from tokenizer import UnknownPreTokenizerError, load_tokenizer
from tokenizer.bpe import BPETokenizer
from tokenizer.errors import TokenizerMetadataError, UnsupportedTokenizerError
from tokenizer.spm import SPMTokenizer
from tokenizer.vocab import TokenType


def _bpe(**extra):
    metadata = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.tokens": ["a", "b", "ab", "<|endoftext|>"],
        "tokenizer.ggml.merges": ["a b"],
    }
    metadata.update(extra)
    return metadata


def test_sources_path_gguffile_mapping(vocab_dir):
    path = vocab_dir / "ggml-vocab-gpt-2.gguf"
    from_path = load_tokenizer(path)
    with open_gguf(path) as gguf:
        from_file = load_tokenizer(gguf)
        from_mapping = load_tokenizer(dict(gguf.metadata))
    assert isinstance(from_path, BPETokenizer)
    for tok in (from_path, from_file, from_mapping):
        assert tok.encode("Hello world") == [15496, 995]
    assert isinstance(load_tokenizer(vocab_dir / "ggml-vocab-llama-spm.gguf"), SPMTokenizer)


def test_numpy_arrays_are_accepted():
    tok = load_tokenizer(_bpe(**{"tokenizer.ggml.token_type": np.array([1, 1, 1, 3], dtype=np.int32)}))
    assert tok.token_type(3) == TokenType.CONTROL and tok.encode("ab") == [2]


def test_unknown_token_type_values_become_undefined():
    tok = load_tokenizer(_bpe(**{"tokenizer.ggml.token_type": [1, 9, 1, 3]}))
    assert tok.token_type(1) == TokenType.UNDEFINED and tok.decode([1]) == "b"


def test_end_of_generation_tokens_become_control():
    tok = load_tokenizer(_bpe())  # <|endoftext|> typed NORMAL (absent token_type) in the file
    assert tok.token_type(3) == TokenType.CONTROL and tok.is_eog(3) and tok.eot_id == 3


@pytest.mark.parametrize(
    "change, error, words",
    [
        ({"tokenizer.ggml.model": None}, TokenizerMetadataError, "tokenizer.ggml.model is missing"),
        ({"tokenizer.ggml.model": "bert"}, UnsupportedTokenizerError, "'bert'"),
        ({"tokenizer.ggml.pre": "nope"}, UnknownPreTokenizerError, "tokenizer.ggml.pre = 'nope'"),
        ({"tokenizer.ggml.merges": None}, TokenizerMetadataError, "tokenizer.ggml.merges is missing"),
        ({"tokenizer.ggml.tokens": []}, TokenizerMetadataError, "tokenizer.ggml.tokens"),
        ({"tokenizer.ggml.tokens": "abc"}, TokenizerMetadataError, "tokenizer.ggml.tokens must be a list"),
        ({"tokenizer.ggml.token_type": [1, 1]}, TokenizerMetadataError, "token_type has 2 entries for 4"),
        (
            {"tokenizer.ggml.bos_token_id": "x"},
            TokenizerMetadataError,
            "bos_token_id must be an integer, got str",
        ),
        ({"tokenizer.ggml.bos_token_id": True}, TokenizerMetadataError, "bos_token_id must be an integer"),
        ({"tokenizer.ggml.add_bos_token": 1}, TokenizerMetadataError, "add_bos_token must be a boolean"),
        ({"tokenizer.ggml.pre": 5}, TokenizerMetadataError, "pre must be a string"),
    ],
)
def test_bad_metadata(change, error, words):
    metadata = _bpe()
    for key, value in change.items():
        if value is None:
            del metadata[key]
        else:
            metadata[key] = value
    with pytest.raises(error, match=words):
        load_tokenizer(metadata)


def test_out_of_range_special_id_is_ignored():
    tok = load_tokenizer(_bpe(**{"tokenizer.ggml.bos_token_id": 99, "tokenizer.ggml.add_bos_token": True}))
    assert tok.bos_id is None and tok.encode("ab") == [2]


def test_defaults_follow_llama_cpp():
    assert load_tokenizer(_bpe()).vocab.add_bos is False
    llama3 = load_tokenizer(_bpe(**{"tokenizer.ggml.pre": "llama-bpe", "tokenizer.ggml.bos_token_id": 0}))
    assert llama3.vocab.add_bos is True and llama3.encode("ab") == [0, 2]
    off = _bpe(**{"tokenizer.ggml.pre": "llama-bpe", "tokenizer.ggml.add_bos_token": False})
    assert load_tokenizer(off).vocab.add_bos is False
    spm = load_tokenizer(
        {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["<unk>", "<s>", "</s>", "▁a"]}
    )
    assert (spm.bos_id, spm.eos_id, spm.vocab.unk_id, spm.vocab.add_bos, spm.vocab.add_space_prefix) == (
        1,
        2,
        0,
        True,
        True,
    )
    assert spm.encode("a") == [1, 3]
