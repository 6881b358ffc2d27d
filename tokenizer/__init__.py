"""Tokenizers built from GGUF metadata: byte-level BPE, SentencePiece, streaming decode, chat templates."""

from .base import Tokenizer
from .errors import TemplateError, TokenizerError, UnknownPreTokenizerError
from .factory import load_tokenizer
from .stream import StreamDecoder

__all__ = [
    "StreamDecoder",
    "TemplateError",
    "Tokenizer",
    "TokenizerError",
    "UnknownPreTokenizerError",
    "load_tokenizer",
]
