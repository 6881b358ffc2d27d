"""SentencePiece-style vocabs: llama.cpp's cases for llama-spm and phi-3, the leading-space rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenizer import load_tokenizer
from tokenizer.vocab import TokenType


@pytest.mark.parametrize("name", ["llama-spm", "phi-3"])
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


@pytest.mark.parametrize("name", ["llama-spm", "phi-3"])
def test_llama_cpp_cases_decode_back(name, vocab_tokenizer, vocab_cases):
    tok = vocab_tokenizer(name)
    for text, ids in vocab_cases(name):
        assert tok.decode(ids) == text


def test_dummy_prefix_and_its_removal(llama_spm):
    assert llama_spm.encode("Hello", add_special=False) == [15043]  # "▁Hello"
    assert llama_spm.encode(" Hello", add_special=False) == [29871, 15043]  # "▁" "▁Hello"
    assert llama_spm.encode("Hello") == [1, 15043]  # BOS by default for llama
    assert llama_spm.decode([15043]) == "Hello"
    assert llama_spm.decode([29871, 15043]) == " Hello"
    assert llama_spm.decode([1, 15043]) == "<s>Hello"
    assert llama_spm.decode([1, 15043], skip_special=True) == "Hello"
    assert llama_spm.decode([15043, 15043]) == "Hello Hello"


def test_space_prefix_after_each_special_token(llama_spm):
    ids = llama_spm.encode("Hi</s>Hi", add_special=False, parse_special=True)
    assert ids == [6324, 2, 6324]  # "▁Hi" </s> "▁Hi"
    assert llama_spm.decode(ids) == "Hi</s>Hi"
    assert llama_spm.encode("Hi</s>Hi", add_special=False) != ids  # control text is plain text by default


def test_byte_fallback(llama_spm):
    ids = llama_spm.encode("\U0001f680", add_special=False)  # no token for the rocket
    assert ids == [29871, 243, 162, 157, 131]  # "▁", <0xF0> <0x9F> <0x9A> <0x80>
    assert [llama_spm.token_type(i) for i in ids[1:]] == [TokenType.BYTE] * 4
    assert llama_spm.token_bytes(243) == b"\xf0"
    assert llama_spm.decode(ids) == "\U0001f680"


def test_phi3_token_types_as_in_the_file(vocab_tokenizer):
    tok = vocab_tokenizer("phi-3")
    assert tok.token_type(0) == TokenType.CONTROL  # <unk>
    assert tok.token_type(2) == TokenType.USER_DEFINED  # </s>
    assert tok.vocab.tokens[32000] == "<|endoftext|>" and tok.eos_id == 32000
    assert tok.is_eog(32000) and tok.is_eog(32007)  # <|endoftext|>, <|end|>
    assert not tok.is_eog(2)


def test_phi3_user_defined_token_is_always_parsed_and_strips_right(vocab_tokenizer):
    tok = vocab_tokenizer("phi-3")
    # </s> is user-defined: recognised without parse_special, and (phi-3 rule) eats the spaces after it
    assert tok.encode("a</s>  b", add_special=False) == tok.encode("a", add_special=False) + [2] + tok.encode(
        "b", add_special=False
    )
    # <|user|> is control: recognised only when asked, then also eats the newline after it
    user = tok.vocab.tokens.index("<|user|>")
    assert tok.encode("<|user|>\nHi", add_special=False, parse_special=True) == [user, 6324]
    assert user not in tok.encode("<|user|>\nHi", add_special=False)


def test_score_order_decides_merges():
    # "ab" scores higher than "bc": "abc" -> "ab" "c", although "bc" is also a token
    metadata = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": ["<unk>", "<s>", "</s>", "a", "b", "c", "ab", "bc", "▁"],
        "tokenizer.ggml.scores": [0, 0, 0, -1, -1, -1, -2, -3, -1],
        "tokenizer.ggml.token_type": [2, 3, 3, 1, 1, 1, 1, 1, 1],
        "tokenizer.ggml.add_space_prefix": False,
    }
    tok = load_tokenizer(metadata)
    assert tok.encode("abc", add_special=False) == [6, 5]
    metadata["tokenizer.ggml.scores"] = [0, 0, 0, -1, -1, -1, -3, -2, -1]
    assert load_tokenizer(metadata).encode("abc", add_special=False) == [3, 7]


@settings(max_examples=120, deadline=None)
@given(st.text(max_size=50))
def test_round_trip_with_the_leading_space_rule(llama_spm, text):
    # decoding drops exactly the dummy-prefix space encoding added; U+2581 reads back as a space
    assert llama_spm.decode(llama_spm.encode(text, add_special=False)) == text.replace("\u2581", " ")
    assert llama_spm.decode(llama_spm.encode(text), skip_special=True) == text.replace("\u2581", " ")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["a", " b", "</s>", "<s>", "\n", " ", "x y"]), max_size=8))
def test_round_trip_across_special_tokens(llama_spm, parts):
    text = "".join(parts)
    ids = llama_spm.encode(text, add_special=False, parse_special=True)
    assert llama_spm.decode(ids) == text
