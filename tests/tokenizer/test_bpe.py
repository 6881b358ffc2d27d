"""Byte-level BPE: llama.cpp's cases for gpt-2, qwen2 and llama-bpe, the merge loop, the word cache."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenizer import load_tokenizer
from tokenizer.bpe import BYTE_TO_CHAR, CACHE_MAX_WORD_CHARS, CACHE_MAX_WORDS, byte_decode, bytes_to_unicode


@pytest.mark.parametrize("name", ["gpt-2", "qwen2", "llama-bpe"])
def test_llama_cpp_cases(name, vocab_tokenizer, vocab_cases):
    tok = vocab_tokenizer(name)
    cases = vocab_cases(name)
    assert len(cases) == 46
    failures = [
        (text, tok.encode(text, add_special=False), ids)
        for text, ids in cases
        if tok.encode(text, add_special=False) != ids
    ]
    assert failures == []


@pytest.mark.parametrize("name", ["gpt-2", "qwen2", "llama-bpe"])
def test_llama_cpp_cases_decode_back(name, vocab_tokenizer, vocab_cases):
    tok = vocab_tokenizer(name)
    for text, ids in vocab_cases(name):
        assert tok.decode(ids) == text


def test_byte_table_is_gpt2s():
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert table[ord("A")] == "A" and table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[0] == "Ā"
    assert byte_decode("ĠhelloĊ") == b" hello\n"
    assert byte_decode("".join(BYTE_TO_CHAR[b] for b in range(256))) == bytes(range(256))


def test_byte_decode_keeps_characters_outside_the_table():
    assert byte_decode("Ġ€") == b" " + "€".encode()


def test_qwen2_known_ids(qwen2):
    assert qwen2.encode("Hello world") == [9707, 1879]
    assert qwen2.encode(" Hello, world!") == [21927, 11, 1879, 0]
    assert qwen2.encode("1234") == [16, 17, 18, 19]  # qwen2 splits every digit
    assert qwen2.bos_id == 151643 and qwen2.eos_id == 151643 and qwen2.eot_id == 151645


def test_llama3_digits_in_threes_and_bos(vocab_tokenizer):
    tok = vocab_tokenizer("llama-bpe")
    assert [tok.decode([i]) for i in tok.encode("1234567", add_special=False)] == ["123", "456", "7"]
    assert tok.encode("Hi")[0] == tok.bos_id == 128000  # llama-bpe adds BOS by default


def test_ignore_merges_takes_whole_word_tokens(vocab_tokenizer):
    tok = vocab_tokenizer("llama-bpe")
    assert tok.pre.ignore_merges
    for word in (" hello", " Paris", " tokenizer"):
        chars = "".join(BYTE_TO_CHAR[b] for b in word.encode())
        if chars in tok._token_to_id:
            assert tok.encode(word, add_special=False) == [tok._token_to_id[chars]]


def test_merge_picks_lowest_rank_then_leftmost():
    # toy vocab: "a b" (rank 0) beats "b c" (rank 1); "ab c" then finishes the word
    metadata = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.tokens": ["a", "b", "c", "ab", "bc", "abc", "aa"],
        "tokenizer.ggml.merges": ["a b", "b c", "ab c", "a a"],
    }
    tok = load_tokenizer(metadata)
    assert tok.encode("abc") == [5]
    assert tok.encode("bc") == [4]
    assert tok.encode("aaa") == [6, 0]  # leftmost pair first on equal rank
    assert tok.encode("cab") == [2, 3]


def test_word_cache_is_used_and_bounded(qwen2):
    qwen2._cache.clear()
    qwen2.encode(" cached cached cached")
    assert qwen2._cache[" cached"] == tuple(qwen2.encode(" cached"))
    long_word = "x" * (CACHE_MAX_WORD_CHARS + 1)
    assert qwen2.decode(qwen2.encode(long_word)) == long_word and long_word not in qwen2._cache
    assert len(qwen2._cache) <= CACHE_MAX_WORDS


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60))
def test_qwen2_round_trips_any_text(qwen2, text):
    assert qwen2.decode(qwen2.encode(text)) == text


@pytest.mark.parametrize("name", ["gpt-2", "llama-bpe"])
@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_other_bpe_vocabs_round_trip_any_text(vocab_tokenizer, name, text):
    tok = vocab_tokenizer(name)
    assert tok.decode(tok.encode(text), skip_special=True) == text


@pytest.mark.skipif(not os.environ.get("ORCD_DEV_ORACLE"), reason="dev-only oracle: set ORCD_DEV_ORACLE=1")
def test_qwen_matches_hf_tokenizers(qwen_path, qwen_coder):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(qwen_path.parent), gguf_file=qwen_path.name)
    rng = random.Random(0)
    alphabet = "ab c\n\t 1'9éü日本🚀.,!?-_ \u00a0\u3000\rSLT"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(500)]
    texts.append(Path(__file__).read_text())
    for text in texts:
        assert qwen_coder.encode(text) == hf.encode(text, add_special_tokens=False), repr(text)
