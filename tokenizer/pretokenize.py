"""Pre-tokenizers for byte-level BPE: the regex cascades llama.cpp selects by `tokenizer.ggml.pre`.

A pre-tokenizer splits text into words before BPE runs on each word alone. It is a cascade of
patterns: the first splits the whole text, each next one splits every piece of the previous stage
(so a lookahead never sees past a piece's end). Text between two matches stays a piece of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import regex

from .errors import UnknownPreTokenizerError

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
LLAMA3 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


@dataclass(frozen=True)
class PreTokenizer:
    """One `tokenizer.ggml.pre` behaviour: its regex cascade and the BPE options that go with it."""

    name: str
    patterns: tuple[str, ...]
    ignore_merges: bool = False  # a word that is itself a token is emitted whole (llama 3)
    add_bos: bool = False  # default for `tokenizer.ggml.add_bos_token` when the key is absent
    _compiled: tuple[regex.Pattern, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", tuple(_compile(p) for p in self.patterns))

    def split(self, text: str) -> list[str]:
        """The words of `text`, in order; their concatenation is `text`."""
        pieces = [text] if text else []
        for pattern in self._compiled:
            out: list[str] = []
            for piece in pieces:
                # split() with one capture group yields gap, match, gap, match, ..., gap
                out.extend(p for p in pattern.split(piece) if p)
            pieces = out
        return pieces


@cache
def _compile(pattern: str) -> regex.Pattern:
    return regex.compile(f"({pattern})")


_DEFAULT = (r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]")
_STARCODER = (r"\p{N}", GPT2)
_FALCON = (r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]")

# name -> behaviour; the names and regexes are llama.cpp's (src/llama-vocab.cpp)
_TABLE: dict[str, PreTokenizer] = {}
for _names, _pre in (
    (("default",), PreTokenizer("default", _DEFAULT)),
    (("gpt-2", "phi-2", "mpt", "olmo", "jais", "exaone4", "roberta-bpe"), PreTokenizer("gpt-2", (GPT2,))),
    (
        ("llama-bpe", "llama3", "llama-v3", "falcon3", "pixtral"),
        PreTokenizer("llama-bpe", (LLAMA3,), ignore_merges=True, add_bos=True),
    ),
    (("dbrx", "smaug-bpe", "chatglm-bpe"), PreTokenizer("dbrx", (LLAMA3,))),
    (("qwen2", "deepseek-r1-qwen", "megrez", "stablelm2"), PreTokenizer("qwen2", (QWEN2,))),
    (
        ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"),
        PreTokenizer("smollm", _STARCODER),
    ),
    (("falcon",), PreTokenizer("falcon", _FALCON)),
):
    for _name in _names:
        _TABLE[_name] = _pre

KNOWN = tuple(sorted(_TABLE))


def get_pretokenizer(name: str | None) -> PreTokenizer:
    """The pre-tokenizer for a `tokenizer.ggml.pre` value (absent or empty means llama.cpp's `default`)."""
    if not name:
        return _TABLE["default"]
    try:
        return _TABLE[name]
    except KeyError:
        raise UnknownPreTokenizerError(
            f"tokenizer.ggml.pre = {name!r} is not a known pre-tokenizer; known: {', '.join(KNOWN)}"
        ) from None
