"""Pre-tokenizer regex cascades: exact splits per `tokenizer.ggml.pre`, unknown names, coverage."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenizer import UnknownPreTokenizerError
from tokenizer.pretokenize import KNOWN, get_pretokenizer

TEXT = "Hello world's  12345\n\n\tfoo(x)+=1;"


@pytest.mark.parametrize(
    "name, words",
    [
        ("gpt-2", ["Hello", " world", "'s", " ", " 12345", "\n\n", "\t", "foo", "(", "x", ")+=", "1", ";"]),
        # a tab may lead a word; newlines never do
        (
            "qwen2",
            [
                "Hello",
                " world",
                "'s",
                " ",
                " ",
                "1",
                "2",
                "3",
                "4",
                "5",
                "\n\n",
                "\tfoo",
                "(x",
                ")+=",
                "1",
                ";",
            ],
        ),
        (
            "llama-bpe",
            ["Hello", " world", "'s", " ", " ", "123", "45", "\n\n", "\tfoo", "(x", ")+=", "1", ";"],
        ),
        (
            "smollm",
            [
                "Hello",
                " world",
                "'s",
                "  ",
                "1",
                "2",
                "3",
                "4",
                "5",
                "\n\n",
                "\t",
                "foo",
                "(",
                "x",
                ")+=",
                "1",
                ";",
            ],
        ),
        # punctuation runs first, then gpt-2, then digit runs, then threes of ASCII digits
        (
            "default",
            [
                "Hello",
                " world",
                "'",
                "s",
                " ",
                " ",
                "123",
                "45",
                "\n\n",
                "\t",
                "foo",
                "(",
                "x",
                ")+=",
                "1",
                ";",
            ],
        ),
    ],
)
def test_exact_words(name, words):
    assert get_pretokenizer(name).split(TEXT) == words


def test_aliases_and_absent_name():
    assert get_pretokenizer("llama3") is get_pretokenizer("llama-bpe")
    assert get_pretokenizer("starcoder").patterns == get_pretokenizer("smollm").patterns
    assert get_pretokenizer(None).name == get_pretokenizer("").name == "default"
    assert {"gpt-2", "qwen2", "llama-bpe", "smollm", "default"} <= set(KNOWN)


def test_unknown_name_is_named_in_the_error():
    with pytest.raises(UnknownPreTokenizerError, match="'no-such-pre'"):
        get_pretokenizer("no-such-pre")


def test_lookahead_stops_at_the_piece_end():
    # smollm splits digits first: the spaces before "1" end their piece, so they stay one word
    assert get_pretokenizer("smollm").split("a  1") == ["a", "  ", "1"]
    assert get_pretokenizer("gpt-2").split("a  1") == ["a", " ", " 1"]


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60), st.sampled_from(KNOWN))
def test_words_cover_the_text(text, name):
    words = get_pretokenizer(name).split(text)
    assert "".join(words) == text and all(words)
