"""Programmatic dependent launch in the engine's CUDA graphs (`pytest -m cuda`): kernels that may start
before their predecessor finishes must give bit-identical logits to the same graphs launched plainly
(`ORCD_PDL=0`), over prefill (packed and chunked) and many decode steps at several batch sizes; a race
(a kernel reading its input before `pdl_wait`) shows up as a differing bit."""

from __future__ import annotations

import numpy as np
import pytest

from tests.gpu.engine_steps import greedy_logits

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    from gguf_loader.synthetic import BYTE_VOCAB, write_synthetic_model

    return write_synthetic_model(tmp_path_factory.mktemp("pdl") / "qwen2.gguf", n_layers=4, vocab=BYTE_VOCAB,
                                 vocab_size=512, context_length=1024, seed=17, arch="qwen2", dim=512,
                                 n_heads=8, n_kv_heads=2, hidden_dim=1536, dtype="f16")


def run(path, monkeypatch, pdl: str, prompts: list[list[int]], steps: int):
    """Logits of prefill and of `steps` decode steps (feeding each row's argmax), and the engine's count
    of programmatic launches."""
    from gpu.cuda_engine import CudaEngine

    monkeypatch.setenv("ORCD_PDL", pdl)
    engine = CudaEngine.load(path, max_batch=8, max_context=1024)
    try:
        return greedy_logits(engine, prompts, steps), engine.rt.pdl_launches
    finally:
        engine.close()


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_programmatic_graphs_match_plain_launches_bit_for_bit(path, monkeypatch, batch):
    rng = np.random.default_rng(batch)
    lengths = [5, 40, 300, 70, 9, 130, 17, 600][:batch]  # 600: two chunks of a lone prompt
    prompts = [rng.integers(0, 512, n).tolist() for n in lengths]
    plain, plain_launches = run(path, monkeypatch, "0", prompts, steps=40)
    overlapped, launches = run(path, monkeypatch, "1", prompts, steps=40)
    assert plain_launches == 0
    assert launches > 0, "no kernel was launched programmatically"
    assert np.array_equal(overlapped, plain)  # [1 + steps, batch, vocab]
