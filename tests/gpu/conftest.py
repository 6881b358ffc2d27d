"""Fixtures shared by the GPU tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh random generator per test; its seed is printed so a failure can be replayed."""
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print(f"seed {seed}")  # shown on failure: the draw can be replayed
    return np.random.default_rng(seed)


@pytest.fixture(scope="module", params=["f16", "bf16"])
def rt(request):
    """A runtime on device 0 per operand type (f16, bf16), shared by a test module's kernel tests."""
    from gpu.runtime import Runtime

    runtime = Runtime(0, request.param)
    yield runtime
    runtime.close()


@pytest.fixture(scope="module")
def tiny_qwen_cuda(tmp_path_factory):
    """(CudaEngine, tokenizer) of a synthetic random-weight qwen2 (2 layers, dim 256, byte vocab of 512
    ids), max batch 16 x context 256, shared by a test module's runner tests."""
    from gguf_loader.synthetic import BYTE_VOCAB, write_synthetic_model
    from gpu.cuda_engine import CudaEngine
    from tokenizer import load_tokenizer

    path = write_synthetic_model(tmp_path_factory.mktemp("tiny-qwen") / "qwen2.gguf", n_layers=2,
                                 vocab=BYTE_VOCAB, vocab_size=512, context_length=1024, seed=5, arch="qwen2",
                                 dim=256, n_heads=4, n_kv_heads=2, dtype="f16")
    engine = CudaEngine.load(path, max_batch=16, max_context=256)
    yield engine, load_tokenizer(path)
    engine.close()
