"""Byte-level BPE (`tokenizer.ggml.model == "gpt2"`): GPT-2, Llama 3, Qwen2, SmolLM and friends.

Text is cut into words by the pre-tokenizer; each word's UTF-8 bytes are written as printable
characters (GPT-2's byte <-> unicode table) and merged pair by pair, lowest merge rank first (the
leftmost pair on ties), until no adjacent pair has a rank. Words repeat a lot, so each word's ids
are cached.
"""

from __future__ import annotations

import heapq

from .base import Tokenizer
from .pretokenize import PreTokenizer, get_pretokenizer
from .vocab import TokenType, Vocab

CACHE_MAX_WORDS = 200_000
CACHE_MAX_WORD_CHARS = 256  # longer words (a CJK paragraph, a run of spaces) are rare repeats


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table: printable bytes map to themselves, the others to code points from U+0100 up."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}
_LATIN1_TO_CHARS = {b: c for b, c in BYTE_TO_CHAR.items()}  # str.translate table over latin-1 text


def byte_decode(token_text: str) -> bytes:
    """Bytes of a byte-level token; a character outside the table stands for its own UTF-8."""
    try:
        return bytes(CHAR_TO_BYTE[c] for c in token_text)
    except KeyError:
        return b"".join(bytes([CHAR_TO_BYTE[c]]) if c in CHAR_TO_BYTE else c.encode() for c in token_text)


class BPETokenizer(Tokenizer):
    """Byte-level BPE over `tokenizer.ggml.merges`."""

    def __init__(self, vocab: Vocab, lstrip: set[int], rstrip: set[int]) -> None:
        self.pre: PreTokenizer = get_pretokenizer(vocab.pre)
        self._token_to_id = {text: i for i, text in enumerate(vocab.tokens)}
        self._ranks: dict[tuple[str, str], int] = {}
        for rank, merge in enumerate(vocab.merges or ()):
            cut = merge.find(" ", 1)  # llama.cpp: the left part may itself start with a space
            if cut > 0:
                self._ranks.setdefault((merge[:cut], merge[cut + 1 :]), rank)
        self._cache: dict[str, tuple[int, ...]] = {}
        pieces = [
            text.encode("utf-8")
            if t in (TokenType.CONTROL, TokenType.UNKNOWN, TokenType.USER_DEFINED)
            else byte_decode(text)
            for text, t in zip(vocab.tokens, vocab.types, strict=True)
        ]
        super().__init__(vocab, pieces, lstrip, rstrip)

    def _encode_text(self, text: str, after_special: bool, out: list[int]) -> None:
        cache = self._cache
        for word in self.pre.split(text):
            ids = cache.get(word)
            if ids is None:
                ids = self._encode_word(word)
                if len(word) <= CACHE_MAX_WORD_CHARS:
                    if len(cache) >= CACHE_MAX_WORDS:
                        cache.clear()
                    cache[word] = ids
            out.extend(ids)

    def _encode_word(self, word: str) -> tuple[int, ...]:
        chars = word.encode("utf-8").decode("latin-1").translate(_LATIN1_TO_CHARS)
        if self.pre.ignore_merges and chars in self._token_to_id:
            return (self._token_to_id[chars],)
        ids: list[int] = []
        for symbol in self._merge(chars):
            token_id = self._token_to_id.get(symbol)
            if token_id is not None:
                ids.append(token_id)
            else:  # no token for the merged text: fall back to its single characters, as llama.cpp does
                ids.extend(self._token_to_id[c] for c in symbol if c in self._token_to_id)
        return tuple(ids)

    def _merge(self, chars: str) -> list[str]:
        """BPE over the characters of one word: repeatedly merge the adjacent pair of lowest rank."""
        n = len(chars)
        if n < 2:
            return [chars]
        ranks = self._ranks
        push, pop = heapq.heappush, heapq.heappop
        symbols = list(chars)  # "" once merged into its left neighbour
        nxt = list(range(1, n + 1))  # n means: no right neighbour
        prv = list(range(-1, n - 1))
        queue = []  # (rank, left index, right index, length of the merged text)
        for i in range(n - 1):
            rank = ranks.get((symbols[i], symbols[i + 1]))
            if rank is not None:
                queue.append((rank, i, i + 1, 2))
        heapq.heapify(queue)
        while queue:
            rank, left, right, size = pop(queue)
            a, b = symbols[left], symbols[right]
            # symbols only grow, so unchanged lengths mean this pair is still the one queued
            if not a or not b or len(a) + len(b) != size:
                continue
            merged = symbols[left] = a + b
            symbols[right] = ""
            after = nxt[left] = nxt[right]
            if after < n:
                prv[after] = left
                rank = ranks.get((merged, symbols[after]))
                if rank is not None:
                    push(queue, (rank, left, after, size + len(symbols[after])))
            before = prv[left]
            if before >= 0:
                rank = ranks.get((symbols[before], merged))
                if rank is not None:
                    push(queue, (rank, before, left, size + len(symbols[before])))
        return [s for s in symbols if s]
