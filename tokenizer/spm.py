"""SentencePiece-style tokenizer (`tokenizer.ggml.model == "llama"`): Llama 1/2, Phi-3, Mistral v1.

Spaces become ``▁`` (and one is put in front of each run of text, see base.py); the text is split
into characters and the adjacent pair whose concatenation is the highest-scoring token is merged
(leftmost on ties) until no pair forms a token. A character left without a token becomes its UTF-8
bytes as ``<0xNN>`` tokens.
"""

from __future__ import annotations

import heapq
import re

from .base import Tokenizer
from .errors import EncodeError
from .vocab import TokenType, Vocab

SPACE = "\u2581"
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class SPMTokenizer(Tokenizer):
    """Score-driven merges over the whole vocabulary, with byte fallback."""

    def __init__(self, vocab: Vocab, lstrip: set[int], rstrip: set[int]) -> None:
        self._token_to_id = {text: i for i, text in enumerate(vocab.tokens)}
        self._scores = vocab.scores or [0.0] * len(vocab.tokens)
        self._byte_ids = [self._byte_token(b, vocab) for b in range(256)]
        pieces = [self._token_piece(text, t) for text, t in zip(vocab.tokens, vocab.types, strict=True)]
        super().__init__(vocab, pieces, lstrip, rstrip)

    def _byte_token(self, byte: int, vocab: Vocab) -> int | None:
        token_id = self._token_to_id.get(f"<0x{byte:02X}>")
        if token_id is None and byte < 128:
            token_id = self._token_to_id.get(chr(byte))
        return token_id if token_id is not None else vocab.unk_id

    @staticmethod
    def _token_piece(text: str, token_type: int) -> bytes:
        if token_type == TokenType.BYTE and (byte := _BYTE_TOKEN.fullmatch(text)):
            return bytes([int(byte[1], 16)])
        if token_type in (TokenType.CONTROL, TokenType.UNKNOWN, TokenType.USER_DEFINED):
            return text.encode("utf-8")
        return text.replace(SPACE, " ").encode("utf-8")

    def _encode_text(self, text: str, after_special: bool, out: list[int]) -> None:
        if after_special and self.vocab.add_space_prefix:
            text = " " + text
        for symbol in self._merge(text.replace(" ", SPACE)):
            token_id = self._token_to_id.get(symbol)
            if token_id is not None:
                out.append(token_id)
                continue
            for byte in symbol.encode("utf-8"):
                byte_id = self._byte_ids[byte]
                if byte_id is None:
                    raise EncodeError(
                        f"byte 0x{byte:02X} of {symbol!r} has no <0x{byte:02X}> or unknown token"
                    )
                out.append(byte_id)

    def _merge(self, text: str) -> list[str]:
        """Merge adjacent symbols by the score of the token they form, best first, until none forms one."""
        n = len(text)
        if n < 2:
            return [text] if text else []
        lookup, scores = self._token_to_id.get, self._scores
        symbols = list(text)  # "" once merged into its left neighbour
        nxt = list(range(1, n + 1))
        prv = list(range(-1, n - 1))
        queue = []  # (-score, left index, right index, merged length)

        def offer(left: int, right: int) -> None:
            merged = symbols[left] + symbols[right]
            token_id = lookup(merged)
            if token_id is not None:
                heapq.heappush(queue, (-scores[token_id], left, right, len(merged)))

        for i in range(n - 1):
            offer(i, i + 1)
        while queue:
            _, left, right, size = heapq.heappop(queue)
            if not symbols[left] or not symbols[right] or len(symbols[left]) + len(symbols[right]) != size:
                continue  # stale: one side was merged elsewhere since this pair was queued
            symbols[left] += symbols[right]
            symbols[right] = ""
            nxt[left] = nxt[right]
            if nxt[left] < n:
                prv[nxt[left]] = left
            if prv[left] >= 0:
                offer(prv[left], left)
            if nxt[left] < n:
                offer(left, nxt[left])
        return [s for s in symbols if s]
