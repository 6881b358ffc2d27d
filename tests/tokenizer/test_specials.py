"""Special-token splitting: control tokens only when asked, user-defined always, longest first, strips."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenizer.specials import SpecialSplitter
from tokenizer.vocab import TokenType

N, C, U = TokenType.NORMAL, TokenType.CONTROL, TokenType.USER_DEFINED
TOKENS = ["a", "<s>", "<|im_start|>", "<tool>", "<|im"]
TYPES = [N, C, C, U, U]


def test_control_tokens_only_with_parse_special():
    splitter = SpecialSplitter(TOKENS, TYPES, set(), set())
    assert splitter.split("x<s>y", parse_special=False) == ["x<s>y"]
    assert splitter.split("x<s>y", parse_special=True) == ["x", 1, "y"]


def test_user_defined_tokens_always():
    splitter = SpecialSplitter(TOKENS, TYPES, set(), set())
    assert splitter.split("<tool>x<tool>", parse_special=False) == [3, "x", 3]


def test_longer_token_wins_over_its_prefix():
    splitter = SpecialSplitter(TOKENS, TYPES, set(), set())
    assert splitter.split("<|im_start|><|im", parse_special=True) == [2, 4]
    # without parse_special only the user-defined "<|im" is matched, inside the control token's text too
    assert splitter.split("<|im_start|><|im", parse_special=False) == [4, "_start|>", 4]


def test_strip_flags_eat_ascii_whitespace():
    splitter = SpecialSplitter(TOKENS, TYPES, lstrip={3}, rstrip={1})
    assert splitter.split("x \n<tool> y", parse_special=False) == ["x", 3, " y"]
    assert splitter.split("x <s> \t y<s>", parse_special=True) == ["x ", 1, "y", 1]
    assert splitter.split("<s>   ", parse_special=True) == [1]


def test_empty_text_and_empty_token_texts():
    splitter = SpecialSplitter(["", "<s>"], [C, C], set(), set())
    assert splitter.split("", parse_special=True) == []
    assert splitter.split("ab", parse_special=True) == ["ab"]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "<", "s>", "<s>", "<|im", "_start|>", "<tool>", " ", "\n"]), max_size=12),
    st.booleans(),
)
def test_fragments_spell_the_text(parts, parse_special):
    splitter = SpecialSplitter(TOKENS, TYPES, set(), set())
    text = "".join(parts)
    fragments = splitter.split(text, parse_special)
    assert "".join(TOKENS[f] if isinstance(f, int) else f for f in fragments) == text
    assert all(f != "" for f in fragments)
    allowed = {1, 2, 3, 4} if parse_special else {3, 4}
    assert {f for f in fragments if isinstance(f, int)} <= allowed
    # no recognisable special text is left inside the plain fragments
    for fragment in fragments:
        if isinstance(fragment, str):
            assert not any(TOKENS[i] in fragment for i in allowed)
