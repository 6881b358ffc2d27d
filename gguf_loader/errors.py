"""Errors raised by gguf_loader; every message names the field, tensor, key or byte offset."""

from __future__ import annotations


class GGUFError(Exception):
    """Root of every error about a GGUF file or a model asset."""


class AssetError(GGUFError):
    """A catalogued asset could not be fetched, or its hash did not match."""
