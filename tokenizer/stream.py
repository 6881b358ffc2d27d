"""Incremental detokenisation that never splits a character.

Token bytes go through Python's incremental UTF-8 decoder, which holds back an incomplete trailing
sequence until the bytes that finish it arrive; invalid bytes become U+FFFD exactly where a one-shot
decode would put them. So the concatenated outputs of `feed` and `flush` equal ``decode(ids)``
for any split of `ids`.
"""

from __future__ import annotations

import codecs
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Tokenizer


class StreamDecoder:
    """Feed token ids one at a time; get back only the complete characters they finish."""

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = False, after_text: bool = False) -> None:
        self._tokenizer = tokenizer
        self._skip_special = skip_special
        self._after_text = after_text
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._at_start = not after_text  # the next token starts a run of text (leading-space rule)

    def feed(self, token_id: int) -> str:
        """The text this token completes ("" while a multi-byte character is still unfinished)."""
        piece, self._at_start = self._tokenizer._piece(token_id, self._skip_special, self._at_start)
        return self._utf8.decode(piece) if piece else ""

    def flush(self) -> str:
        """The held-back bytes of an unfinished character, as U+FFFD; the decoder can be reused after."""
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        self._at_start = not self._after_text
        return text
