"""Splitting text around special tokens before the model's tokenizer sees it (llama.cpp's rules).

Control and unknown-type tokens (``<|im_start|>``, ``<s>``) are recognised only when the caller asks
(`parse_special`); user-defined tokens always are. Longer token texts are matched first, over the
whole text, then shorter ones in what is left. A token flagged `rstrip` swallows the ASCII whitespace
after it, one flagged `lstrip` the whitespace before it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .vocab import TokenType

_ASCII_SPACE = " \t\n\v\f\r"  # C isspace(), as llama.cpp uses


@dataclass(frozen=True)
class SpecialToken:
    text: str
    id: int
    always: bool  # user-defined: matched even without parse_special
    lstrip: bool = False
    rstrip: bool = False


class SpecialSplitter:
    """Turns text into fragments: `str` pieces of plain text and `int` ids of special tokens."""

    def __init__(self, tokens: list[str], types: list[int], lstrip: set[int], rstrip: set[int]) -> None:
        kinds = {TokenType.CONTROL, TokenType.UNKNOWN, TokenType.USER_DEFINED}
        ids = [i for i, t in enumerate(types) if t in kinds and tokens[i]]
        ids.sort(key=lambda i: -len(tokens[i].encode("utf-8")))  # llama.cpp sorts by byte length
        self._all = [
            SpecialToken(tokens[i], i, types[i] == TokenType.USER_DEFINED, i in lstrip, i in rstrip)
            for i in ids
        ]
        self._always = [s for s in self._all if s.always]
        # one scan that tells whether any special text occurs at all (the usual answer is no)
        self._any_all = _any_of(self._all)
        self._any_always = _any_of(self._always)

    def split(self, text: str, parse_special: bool) -> list[str | int]:
        fragments: list[str | int] = [text] if text else []
        any_of = self._any_all if parse_special else self._any_always
        if any_of is None or not any_of.search(text):
            return fragments
        for special in self._all if parse_special else self._always:
            if special.text not in text:
                continue
            out: list[str | int] = []
            for fragment in fragments:
                if isinstance(fragment, int) or special.text not in fragment:
                    out.append(fragment)
                else:
                    out.extend(_cut(fragment, special))
            fragments = out
        return fragments


def _any_of(specials: list[SpecialToken]) -> re.Pattern | None:
    return re.compile("|".join(re.escape(s.text) for s in specials)) if specials else None


def _cut(fragment: str, special: SpecialToken) -> list[str | int]:
    parts = fragment.split(special.text)
    out: list[str | int] = []
    for n, part in enumerate(parts):
        if n > 0:
            out.append(special.id)
            if special.rstrip:
                part = part.lstrip(_ASCII_SPACE)
        if n < len(parts) - 1 and special.lstrip:
            part = part.rstrip(_ASCII_SPACE)
        if part:
            out.append(part)
    return out
