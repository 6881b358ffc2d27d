"""A tiny synthetic llama (byte-level vocab) for the queue's tests, and its reference generations."""

from __future__ import annotations

from pathlib import Path

import pytest

from gguf_loader.synthetic import write_synthetic_model

MAX_CONTEXT = 128


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("queue-model") / "tiny-queue.gguf"
    return write_synthetic_model(path, "llama", vocab="bytes", dim=64, n_layers=2, n_heads=4,
                                 context_length=512, seed=7)


class Reference:
    """`orcd run`'s path (gpu.runner.generate on a numpy engine) for expected tokens and text."""

    def __init__(self, model: Path) -> None:
        from gpu.engine import load_engine
        from tokenizer import load_tokenizer

        self.tokenizer = load_tokenizer(model)
        self.engine = load_engine(model, backend="numpy", max_batch=1, max_context=MAX_CONTEXT)

    def __call__(self, prompt: str, params, *, chat: bool = False) -> tuple[list[int], str, str]:
        """(ids, text, finish reason)."""
        from gpu.runner import encode_prompt, generate

        prompt_ids = encode_prompt(self.tokenizer, prompt, chat=chat)
        steps = list(generate(self.engine, self.tokenizer, prompt_ids, params))
        ids = [s.token_id for s in steps if s.token_id is not None]
        return ids, "".join(s.text for s in steps), steps[-1].finish_reason


def reference(model: Path, prompt: str, params, *, chat: bool = False) -> tuple[list[int], str, str]:
    return Reference(model)(prompt, params, chat=chat)
