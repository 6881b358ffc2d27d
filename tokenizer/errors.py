"""Errors raised by the tokenizer package; every message names the key, token id or template line."""

from __future__ import annotations


class TokenizerError(Exception):
    """Root of every tokenizer error."""


class TokenizerMetadataError(TokenizerError):
    """A `tokenizer.ggml.*` key is missing, has the wrong type, or disagrees with another key."""


class UnsupportedTokenizerError(TokenizerError):
    """`tokenizer.ggml.model` names a tokenizer family this package does not implement."""


class UnknownPreTokenizerError(TokenizerError):
    """`tokenizer.ggml.pre` names a pre-tokenizer this package does not know."""


class TokenIdError(TokenizerError):
    """A token id outside ``[0, vocab_size)`` was given to decode or token_bytes."""


class EncodeError(TokenizerError):
    """The text cannot be encoded (e.g. it holds a lone surrogate, which has no UTF-8 form)."""


class TemplateError(TokenizerError):
    """A chat template failed to compile or render, tried to escape the sandbox, or grew too large."""
