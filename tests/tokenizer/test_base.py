"""What both tokenizer families share: BOS/EOS, decoding, skip_special, token bytes, EOG, errors."""

from __future__ import annotations

import pytest

from tokenizer import TokenizerError
from tokenizer.errors import EncodeError, TokenIdError


def test_bos_eos_follow_the_metadata(smollm2, qwen_coder, llama_spm):
    assert smollm2.encode("Hi") == smollm2.encode("Hi", add_special=False)  # add_bos_token = false
    assert qwen_coder.encode("Hi") == [13048]
    assert llama_spm.encode("Hi")[0] == 1 and llama_spm.encode("Hi", add_special=False)[0] != 1
    assert llama_spm.encode("") == [1] and llama_spm.encode("", add_special=False) == []


def test_control_tokens_parsed_only_when_asked(qwen_coder):
    text = "<|im_start|>user"
    assert qwen_coder.encode(text, parse_special=True) == [151644, 872]
    assert 151644 not in qwen_coder.encode(text)
    assert qwen_coder.decode(qwen_coder.encode(text)) == text


def test_user_defined_tokens_always_parsed(qwen_coder):
    assert qwen_coder.encode("<tool_call>") == [151657]


def test_decode_and_skip_special(qwen_coder):
    ids = [151644, 872, 198, 6023, 151645]
    assert qwen_coder.decode(ids) == "<|im_start|>user\nhi<|im_end|>"
    assert qwen_coder.decode(ids, skip_special=True) == "user\nhi"
    assert qwen_coder.decode([151657], skip_special=True) == "<tool_call>"  # user-defined: kept


def test_token_bytes(qwen_coder, smollm2):
    assert qwen_coder.token_bytes(9707) == b"Hello"
    assert qwen_coder.token_bytes(151645) == b"<|im_end|>"
    assert smollm2.token_bytes(216) == b" "


def test_eog_ids(qwen_coder, smollm2):
    assert qwen_coder.eos_id == 151645 and qwen_coder.eot_id == 151645
    assert qwen_coder.is_eog(151645) and qwen_coder.is_eog(151643) and not qwen_coder.is_eog(151644)
    assert qwen_coder.is_eog(151664)  # <|file_sep|>, as llama.cpp
    assert smollm2.eos_id == 2 and smollm2.is_eog(0) and smollm2.is_eog(2) and not smollm2.is_eog(1)


def test_smollm_pre_tokenizer_splits_digits(smollm2):
    assert smollm2.vocab.pre == "smollm"
    ids = smollm2.encode("Hello, world! 123")
    assert ids == [19556, 28, 905, 17, 216, 33, 34, 35]
    assert [smollm2.decode([i]) for i in ids] == ["Hello", ",", " world", "!", " ", "1", "2", "3"]


def test_bad_ids_raise(qwen2):
    for bad in (-1, qwen2.vocab_size):
        with pytest.raises(TokenIdError, match=str(bad)):
            qwen2.decode([bad])
        with pytest.raises(TokenIdError):
            qwen2.token_bytes(bad)
        with pytest.raises(TokenizerError):
            qwen2.stream_decoder().feed(bad)


@pytest.mark.parametrize("name", ["qwen2", "llama-spm"])
def test_lone_surrogate_is_an_encode_error(vocab_tokenizer, name):
    with pytest.raises(EncodeError, match="character 2"):
        vocab_tokenizer(name).encode("ab\ud800c")
