"""Errors raised by the engine (either backend); messages name the slot, lengths or device."""

from __future__ import annotations


class EngineError(Exception):
    """Root of every error raised by `gpu` engines."""


class BackendUnavailable(EngineError):
    """The requested backend cannot run here (no PyCUDA, no device, unknown backend name)."""


class OutOfMemory(EngineError):
    """Weights or the KV cache do not fit in the device's (or host's) memory."""


class KVCacheFull(EngineError):
    """Every KV slot is in use; free one before allocating another."""


class UnknownSlot(EngineError):
    """A slot id that was never allocated, or was already freed."""


class ContextOverflow(EngineError):
    """A sequence would grow past the engine's max_context."""


class InvalidInput(EngineError):
    """Malformed arguments: empty prompt, token id out of range, mismatched batch lengths."""


class UnsupportedModel(EngineError):
    """The model's configuration asks for something this backend does not implement."""


class SamplingError(EngineError):
    """Logits or parameters the sampler cannot use (NaN logits, every token banned, bias id ≥ vocab)."""


class GenerationError(EngineError):
    """A request that cannot be generated: empty prompt, prompt filling the context, logit_bias id ≥ vocab."""
