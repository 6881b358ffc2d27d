"""`Tokenizer`: what byte-level BPE and SentencePiece share — special tokens, BOS/EOS, decoding, chat.

Subclasses turn one run of plain text into ids (`_encode_text`) and give each token's bytes
(`_pieces`). Decoding joins token bytes and decodes UTF-8 once, replacing invalid sequences with
U+FFFD; `stream_decoder()` does the same one token at a time.

Leading-space rule (SentencePiece vocabs with `add_space_prefix`): encoding puts one space before
each run of text that starts the input or follows a special token; decoding removes one leading space
from the first token after the start or after a special token, so ``decode(encode(s)) == s``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from .errors import EncodeError, TemplateError, TokenIdError
from .specials import SpecialSplitter
from .vocab import EOG_TEXTS, TokenType, Vocab

if TYPE_CHECKING:
    from .chat import ChatTemplate
    from .stream import StreamDecoder

# tokens that split text (they end a run for the leading-space rule) / that skip_special drops
logger = logging.getLogger(__name__)

_BOUNDARY = frozenset({TokenType.CONTROL, TokenType.UNKNOWN, TokenType.USER_DEFINED})
_SKIPPABLE = frozenset({TokenType.CONTROL, TokenType.UNKNOWN})


class Tokenizer:
    """Text <-> token ids for one GGUF vocabulary."""

    def __init__(self, vocab: Vocab, pieces: list[bytes], lstrip: set[int], rstrip: set[int]) -> None:
        self.vocab = vocab
        self._pieces = pieces  # [vocab_size] bytes each token decodes to (special tokens: their text)
        self._types = vocab.types
        self._boundary = [t in _BOUNDARY for t in vocab.types]
        self._skippable = [t in _SKIPPABLE for t in vocab.types]
        self._strip_leading_space = vocab.model == "llama" and vocab.add_space_prefix
        self._splitter = SpecialSplitter(vocab.tokens, vocab.types, lstrip, rstrip)
        self._eog = self._eog_ids(vocab)
        self._chat: ChatTemplate | None = None
        self._chat_error: TemplateError | None = None  # a template that does not compile fails at use
        if vocab.chat_template:
            from .chat import ChatTemplate

            try:
                self._chat = ChatTemplate(vocab.chat_template, self.bos_text, self.eos_text)
            except TemplateError as exc:
                logger.warning("tokenizer.chat_template unusable, render_chat will fail: %s", exc)
                self._chat_error = exc

    # -- the vocabulary -------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    @property
    def bos_id(self) -> int | None:
        return self.vocab.bos_id

    @property
    def eos_id(self) -> int | None:
        return self.vocab.eos_id

    @property
    def eot_id(self) -> int | None:
        return self.vocab.eot_id

    @property
    def bos_text(self) -> str:
        return "" if self.bos_id is None else self.vocab.tokens[self.bos_id]

    @property
    def eos_text(self) -> str:
        return "" if self.eos_id is None else self.vocab.tokens[self.eos_id]

    @property
    def eog_ids(self) -> frozenset[int]:
        return self._eog

    def is_eog(self, token_id: int) -> bool:
        """Whether generating `token_id` ends the generation (eos, eot, eom and llama.cpp's EOG texts)."""
        return token_id in self._eog

    def token_type(self, token_id: int) -> TokenType:
        self._check(token_id)
        return TokenType(self._types[token_id])

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes `token_id` stands for (a special token: its text), before any leading-space rule."""
        self._check(token_id)
        return self._pieces[token_id]

    # -- encoding -------------------------------------------------------------------------------
    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of `text`.

        add_special: add BOS/EOS as the vocabulary asks (`tokenizer.ggml.add_bos_token`/`add_eos_token`).
        parse_special: recognise control tokens such as ``<|im_start|>`` written in the text;
        user-defined tokens are always recognised.
        """
        out: list[int] = []
        if add_special and self.vocab.add_bos and self.bos_id is not None:
            out.append(self.bos_id)
        after_special = True
        try:
            for fragment in self._splitter.split(text, parse_special):
                if isinstance(fragment, int):
                    out.append(fragment)
                    after_special = True
                else:
                    self._encode_text(fragment, after_special, out)
                    after_special = False
        except UnicodeEncodeError:
            at = next(i for i, c in enumerate(text) if "\ud800" <= c <= "\udfff")
            raise EncodeError(
                f"text has no UTF-8 form: lone surrogate U+{ord(text[at]):04X} at character {at}"
            ) from None
        if add_special and self.vocab.add_eos and self.eos_id is not None:
            out.append(self.eos_id)
        return out

    def _encode_text(self, text: str, after_special: bool, out: list[int]) -> None:
        raise NotImplementedError

    # -- decoding -------------------------------------------------------------------------------
    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Text of `ids`; invalid UTF-8 becomes U+FFFD. skip_special drops control/unknown tokens."""
        at_start = True
        parts = []
        for token_id in ids:
            piece, at_start = self._piece(token_id, skip_special, at_start)
            parts.append(piece)
        return b"".join(parts).decode("utf-8", errors="replace")

    def _piece(self, token_id: int, skip_special: bool, at_start: bool) -> tuple[bytes, bool]:
        """The bytes `token_id` adds to a decoded text, and whether the next token starts a run."""
        self._check(token_id)
        if self._boundary[token_id]:
            return (b"" if skip_special and self._skippable[token_id] else self._pieces[token_id]), True
        piece = self._pieces[token_id]
        if at_start and self._strip_leading_space and piece[:1] == b" ":
            piece = piece[1:]
        return piece, False

    def stream_decoder(self, skip_special: bool = False, after_text: bool = False) -> StreamDecoder:
        """An incremental decoder whose outputs, concatenated, equal ``decode(ids, skip_special)``.

        after_text: the ids continue a text already shown (a generation after its prompt), so the
        first token keeps its leading space (SentencePiece vocabularies; BPE is unaffected).
        """
        from .stream import StreamDecoder

        return StreamDecoder(self, skip_special, after_text)

    # -- chat -----------------------------------------------------------------------------------
    @property
    def chat_template(self) -> ChatTemplate | None:
        """The compiled template; None when the file has none (or one that does not compile)."""
        return self._chat

    def render_chat(
        self, messages: Sequence[Mapping[str, object]], add_generation_prompt: bool = True
    ) -> str:
        """The prompt text for `messages` by the model's template, or the plain fallback format
        when the file has no template (a template that does not compile raises TemplateError)."""
        from .chat import render_plain

        if self._chat_error is not None:
            raise TemplateError(f"the model's chat template does not compile: {self._chat_error}")
        if self._chat is None:
            return render_plain(messages, add_generation_prompt)
        return self._chat.render(messages, add_generation_prompt=add_generation_prompt)

    # -- helpers --------------------------------------------------------------------------------
    def _check(self, token_id: int) -> None:
        if not 0 <= token_id < len(self._pieces):
            raise TokenIdError(f"token id {token_id} is outside the vocabulary [0, {len(self._pieces)})")

    @staticmethod
    def _eog_ids(vocab: Vocab) -> frozenset[int]:
        eog = {i for i in (vocab.eos_id, vocab.eot_id, vocab.eom_id) if i is not None}
        wanted = set(EOG_TEXTS)
        eog.update(i for i, text in enumerate(vocab.tokens) if text in wanted)
        return frozenset(eog)
