"""CI-sized tokenizer fuzzing (bench/fuzz_tokenizer.py runs 10,000 texts per vocab): hypothesis text
and id sequences on all five llama.cpp vocabs never crash encode / decode / stream decode, and every
hostile chat template is refused or bounded.
"""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gguf_loader.assets import VOCAB_NAMES
from tests.reliability.text_fuzz import (
    HOSTILE_TEMPLATES,
    TEMPLATE_OUTPUT_BOUND,
    check_ids,
    check_text,
    missing_bytes,
    random_text,
    specials_of,
)
from tokenizer.chat import ChatTemplate
from tokenizer.errors import TemplateError, TokenIdError

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("name", VOCAB_NAMES)
@FUZZ
@given(text=st.text(max_size=120), seed=st.integers(0, 2**32 - 1))
def test_hostile_text_never_crashes(vocab_tokenizer, name, text, seed):
    tok = vocab_tokenizer(name)
    mixed = random_text(random.Random(seed), specials_of(tok))
    for sample in (text, mixed, text + mixed):
        assert check_text(tok, sample, missing_bytes(tok)) == []


@pytest.mark.parametrize("name", VOCAB_NAMES)
@FUZZ
@given(data=st.data())
def test_any_id_sequence_decodes_as_it_streams(vocab_tokenizer, name, data):
    tok = vocab_tokenizer(name)
    ids = data.draw(st.lists(st.integers(0, tok.vocab_size - 1), max_size=48))
    assert check_ids(tok, ids) == []
    bad = data.draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=tok.vocab_size)))
    with pytest.raises(TokenIdError):
        tok.decode([*ids, bad])


@pytest.mark.parametrize(("name", "source"), HOSTILE_TEMPLATES, ids=[n for n, _ in HOSTILE_TEMPLATES])
def test_hostile_template_is_refused_or_bounded(name, source):
    started = time.perf_counter()
    try:
        out = ChatTemplate(source, "<s>", "</s>").render([{"role": "user", "content": "hi"}])
    except TemplateError:
        out = ""
    assert time.perf_counter() - started < 5.0
    assert len(out) <= TEMPLATE_OUTPUT_BOUND
    assert "class" not in out and "function" not in out and "module" not in out  # nothing leaked
