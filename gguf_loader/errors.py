"""Errors raised by gguf_loader; every message names the field, tensor, key or byte offset."""

from __future__ import annotations


class GGUFError(Exception):
    """Root of every error about a GGUF file or a model asset."""


class AssetError(GGUFError):
    """A catalogued asset could not be fetched, or its hash did not match."""


class GGUFOpenError(GGUFError):
    """The file could not be opened or mapped (missing, unreadable, empty)."""


class GGUFFormatError(GGUFError):
    """The header or the file's structure is malformed (magic, version, counts, data section)."""


class GGUFTruncatedError(GGUFFormatError):
    """A count, length or field runs past the end of the file."""


class GGUFValueError(GGUFError):
    """A metadata key or value is malformed (value type, UTF-8, bool, nesting, duplicate key)."""


class GGUFTensorError(GGUFError):
    """A tensor info is malformed (dims, sizes, offset, alignment, overlap, duplicate name)."""


class UnsupportedTypeError(GGUFTensorError):
    """A ggml tensor type that is unknown, removed, or that this package cannot dequantise."""


class ArchitectureError(GGUFError):
    """The model's architecture is unsupported, or its hyper-parameters or tensors don't fit it."""
