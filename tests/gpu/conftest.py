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
