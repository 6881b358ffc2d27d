"""`CudaEngine.warm_up` (`pytest -m cuda`): every decode graph captured before any request, and the
scratch-slot work it does changes no request's result."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    from gguf_loader.synthetic import BYTE_VOCAB, write_synthetic_model

    return write_synthetic_model(tmp_path_factory.mktemp("warm-up") / "qwen2.gguf", n_layers=2,
                                 vocab=BYTE_VOCAB, vocab_size=512, context_length=1024, seed=9, arch="qwen2",
                                 dim=256, n_heads=4, n_kv_heads=2, dtype="f16")


def greedy(engine, prompts: list[list[int]], steps: int) -> list[list[int]]:
    slots = [engine.alloc() for _ in prompts]
    ids = engine.prefill(slots, prompts).argmax(axis=1).tolist()
    out = [[i] for i in ids]
    for _ in range(steps):
        ids = engine.decode_greedy(slots, ids).tolist()
        for row, token in zip(out, ids, strict=True):
            row.append(token)
    for slot in slots:
        engine.free(slot)
    return out


def test_warm_up_captures_every_bucket_and_changes_no_result(path):
    from gpu.cuda_engine import CudaEngine, direct_tiers

    prompts = [[1 + k, 20, 30 + k, 40] for k in range(5)]
    cold = CudaEngine.load(path, max_batch=16, max_context=256)
    try:
        expected = greedy(cold, prompts, 12)
    finally:
        cold.close()
    warm = CudaEngine.load(path, max_batch=16, max_context=256)
    try:
        assert warm.warm_up() > 0.0
        assert warm.buckets == [1, 2, 4, 8, 16]
        assert all(bucket in warm.graphs for bucket in warm.buckets)
        direct = [b for b in warm.buckets if all(("direct", b, t) in warm.graphs for t in direct_tiers(b))]
        assert direct == [1, 2, 4, 8]  # one-pass attention, each tier
        assert all(("prefill", rows) in warm.graphs for rows in (8, 16, 32, 48, 64, 96, 128, 192, 256, 320,
                                                                  384, 448, 512))
        assert ("chunk", 256) in warm.graphs and ("chunk", 320) not in warm.graphs  # chunks fit the context
        assert warm.slots.in_use() == 0  # warm-up ran on the scratch slot only
        assert greedy(warm, prompts, 12) == expected
        assert greedy(warm, prompts[:1], 12) == expected[:1]
    finally:
        warm.close()
