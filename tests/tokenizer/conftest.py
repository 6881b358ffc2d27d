"""Tokenizers over the real vocabularies, built once per session, and llama.cpp's test cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenizer import Tokenizer, load_tokenizer

VOCABS = ("gpt-2", "qwen2", "phi-3", "llama-spm", "llama-bpe")
_SEP = "\n__ggml_vocab_test__\n"


def read_cases(vocab_dir: Path, name: str) -> list[tuple[str, list[int]]]:
    """llama.cpp's tests/test-tokenizer-0 format: texts split by `_SEP`, one line of ids per text."""
    raw = (vocab_dir / f"ggml-vocab-{name}.gguf.inp").read_bytes().decode("utf-8")
    texts = []
    pos = 0
    while pos < len(raw):  # as test-tokenizer-0.cpp: a trailing separator adds no empty case
        nxt = raw.find(_SEP, pos)
        if nxt < 0:
            texts.append(raw[pos:])
            break
        texts.append(raw[pos:nxt])
        pos = nxt + len(_SEP)
    lines = (vocab_dir / f"ggml-vocab-{name}.gguf.out").read_bytes().decode("utf-8").splitlines()
    assert len(texts) == len(lines), f"{name}: {len(texts)} texts but {len(lines)} expected lines"
    return [(t, [int(x) for x in line.split()]) for t, line in zip(texts, lines, strict=True)]


@pytest.fixture(scope="session")
def vocab_cases(vocab_dir):
    """`vocab_cases(name)`: llama.cpp's (text, expected ids) pairs for ggml-vocab-<name>.gguf."""
    return lambda name: read_cases(vocab_dir, name)


@pytest.fixture(scope="session")
def qwen2(vocab_tokenizer) -> Tokenizer:
    return vocab_tokenizer("qwen2")


@pytest.fixture(scope="session")
def llama_spm(vocab_tokenizer) -> Tokenizer:
    return vocab_tokenizer("llama-spm")


@pytest.fixture(scope="session")
def smollm2(smollm2_path) -> Tokenizer:
    return load_tokenizer(smollm2_path)


@pytest.fixture(scope="session")
def qwen_coder(qwen_path) -> Tokenizer:
    return load_tokenizer(qwen_path)
