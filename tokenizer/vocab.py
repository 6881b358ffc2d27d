"""The vocabulary as a GGUF file states it: token texts, types, scores, merges, special ids, flags."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class TokenType(IntEnum):
    """`tokenizer.ggml.token_type` values (llama.cpp's numbering)."""

    UNDEFINED = 0
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


# Token texts llama.cpp takes for end-of-turn when `tokenizer.ggml.eot_token_id` is absent (first wins),
# and those it always treats as end-of-generation.
EOT_TEXTS = (
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
)
# fill-in-the-middle padding / repository / file separators end a generation too
EOG_TEXTS = (
    *EOT_TEXTS[:9],
    "<|eom_id|>",
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "[PAD]",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    "<|file_sep|>",
)


@dataclass(frozen=True)
class Vocab:
    """Everything the tokenizers need, read from `tokenizer.ggml.*` (see factory.py)."""

    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    pre: str  # `tokenizer.ggml.pre`, "" when absent
    tokens: list[str]
    types: list[int]  # TokenType per token
    scores: list[float] | None  # SPM merge scores
    merges: list[str] | None  # BPE merges "left right", highest priority first
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None
    eom_id: int | None
    unk_id: int | None
    pad_id: int | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    chat_template: str | None
    model_name: str  # `general.name`, lower-cased; some models get per-token strip flags by name

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)
