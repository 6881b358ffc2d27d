"""The streaming decoder: same text as decode(), never a split character, never a repeated one."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenizer.bpe import BYTE_TO_CHAR


def _stream(tok, ids, skip_special=False):
    dec = tok.stream_decoder(skip_special=skip_special)
    outputs = [dec.feed(i) for i in ids]
    return outputs, dec.flush()


def _byte_ids(tok, data: bytes) -> list[int]:
    return [tok._token_to_id[BYTE_TO_CHAR[b]] for b in data]


def test_multibyte_character_waits_for_its_last_byte(qwen2):
    rocket = _byte_ids(qwen2, "\U0001f680".encode())  # one token per byte of F0 9F 9A 80
    ids = rocket + qwen2.encode("!")
    outputs, tail = _stream(qwen2, ids)
    assert outputs[: len(rocket) - 1] == [""] * (len(rocket) - 1)
    assert outputs[len(rocket) - 1] == "\U0001f680"
    assert outputs[-1] == "!" and tail == ""


def test_unfinished_character_is_flushed_as_one_replacement(qwen2):
    ids = _byte_ids(qwen2, "\U0001f680".encode()[:3])
    outputs, tail = _stream(qwen2, ids)
    assert "".join(outputs) == "" and tail == "\ufffd"
    assert qwen2.decode(ids) == "\ufffd"


def test_spm_leading_space_rule_when_streaming(llama_spm):
    ids = llama_spm.encode(" Hello world")  # BOS "▁" "▁Hello" "▁world"
    outputs, tail = _stream(llama_spm, ids, skip_special=True)
    assert outputs == ["", "", " Hello", " world"] and tail == ""
    outputs, _ = _stream(llama_spm, llama_spm.encode("Hello", add_special=False) * 2)
    assert outputs == ["Hello", " Hello"]


def test_generation_after_a_prompt_keeps_the_first_space(llama_spm, qwen2):
    paris = llama_spm.encode(" Paris", add_special=False)[-1:]  # "▁Paris"
    dec = llama_spm.stream_decoder(after_text=True)
    assert [dec.feed(i) for i in paris] == [" Paris"]
    assert [llama_spm.stream_decoder().feed(i) for i in paris] == ["Paris"]
    ids = qwen2.encode(" Paris")
    assert "".join(qwen2.stream_decoder(after_text=True).feed(i) for i in ids) == " Paris"


def test_decoder_is_reusable_after_flush(qwen2):
    dec = qwen2.stream_decoder()
    first = [dec.feed(i) for i in qwen2.encode("ab")]
    dec.flush()
    assert [dec.feed(i) for i in qwen2.encode("ab")] == first


# byte-level ids 0..255 are the 256 single bytes, so random ones make arbitrary (often invalid) UTF-8
_random_bytes = st.lists(st.integers(0, 255), max_size=24)


@settings(max_examples=200, deadline=None)
@given(st.one_of(_random_bytes, st.lists(st.integers(0, 151935), max_size=24)))
def test_stream_equals_decode_for_any_ids(qwen2, ids):
    outputs, tail = _stream(qwen2, ids)
    assert "".join(outputs) + tail == qwen2.decode(ids)
    data = b"".join(qwen2.token_bytes(i) for i in ids)
    try:
        expected = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    # valid UTF-8: exactly the text, so no U+FFFD unless the text has one, and each character once
    assert "".join(outputs) + tail == expected and tail == ""


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40), st.booleans())
def test_stream_of_encoded_text_spm(llama_spm, text, skip_special):
    ids = llama_spm.encode(text)
    outputs, tail = _stream(llama_spm, ids, skip_special)
    assert "".join(outputs) + tail == llama_spm.decode(ids, skip_special=skip_special)
    assert "\ufffd" not in "".join(outputs) or "\ufffd" in text


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_emitted_text_is_always_a_prefix(qwen2, text):
    dec = qwen2.stream_decoder()
    emitted = ""
    for i in qwen2.encode(text):
        emitted += dec.feed(i)
        assert text.startswith(emitted)
    assert emitted + dec.flush() == text
