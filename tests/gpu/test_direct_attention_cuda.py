"""The one-pass decode attention (`pytest -m cuda`): steps whose positions are all below `direct_limit` run
graphs with one attention launch a layer instead of two; logits must be bit-identical to the two-pass
graphs (`ORCD_DIRECT_ATTENTION=0`) over prefill and decode steps that cross the limit, so a row's result
never depends on which form its batch took."""

from __future__ import annotations

import numpy as np
import pytest

from tests.gpu.engine_steps import greedy_logits

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    from gguf_loader.synthetic import BYTE_VOCAB, write_synthetic_model

    return write_synthetic_model(tmp_path_factory.mktemp("direct") / "qwen2.gguf", n_layers=3,
                                 vocab=BYTE_VOCAB, vocab_size=512, context_length=1024, seed=23, arch="qwen2",
                                 dim=448, n_heads=7, n_kv_heads=1, hidden_dim=1024, dtype="f16")


def run(path, monkeypatch, direct: str, prompts: list[list[int]], steps: int):
    """Logits of prefill and `steps` decode steps (feeding each row's argmax), and the graph keys used."""
    from gpu.cuda_engine import CudaEngine

    monkeypatch.setenv("ORCD_DIRECT_ATTENTION", direct)
    engine = CudaEngine.load(path, max_batch=8, max_context=1024)
    try:
        return greedy_logits(engine, prompts, steps), engine.graphs.keys()
    finally:
        engine.close()


# the first prompt's steps cross the bucket's limit (batch 1: the 128-position tier's, then two passes), or
# the 128-position tier's into the 512-position one (batch 3)
@pytest.mark.parametrize(("batch", "first"), [(1, "limit"), (3, 110), (3, "limit"), (8, "limit")])
def test_one_pass_attention_matches_two_passes_bit_for_bit(path, monkeypatch, batch, first):
    from gpu.cuda_engine import direct_limit, direct_tiers

    rng = np.random.default_rng(batch)
    bucket = next(b for b in (1, 2, 4, 8) if b >= batch)
    past_limit = first == "limit"  # else the steps cross from the 128-position tier into the next
    first = direct_limit(bucket) - 20 if first == "limit" else first
    lengths = [first, 5, 60, 30, 9, 64, 17, 100][:batch]
    prompts = [rng.integers(0, 512, n).tolist() for n in lengths]
    two, two_keys = run(path, monkeypatch, "0", prompts, steps=40)
    one, one_keys = run(path, monkeypatch, "1", prompts, steps=40)
    tiers = {("direct", bucket, t) for t in direct_tiers(bucket)}
    used = {k for k in one_keys if isinstance(k, tuple) and k[:2] == ("direct", bucket)}
    assert used and used <= tiers and not tiers & set(two_keys)
    assert (bucket in one_keys) == past_limit and (used == tiers or past_limit)
    assert np.array_equal(one, two)  # [1 + steps, batch, vocab]
