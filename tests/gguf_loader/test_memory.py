"""Memory estimate and file statistics: exact figures for the two real models, derived by hand."""

from __future__ import annotations

import pytest

from gguf_loader import memory
from gguf_loader.arch import ModelConfig
from gguf_loader.reader import open_gguf
from gguf_loader.synthetic import BYTE_VOCAB, write_synthetic_model


def _llama_params(c: ModelConfig, output: bool, biases: bool) -> int:
    """Parameter count from the hyper-parameters alone (independent of the file's tensor list)."""
    layer = 2 * c.dim + c.dim * c.q_dim * 2 + 2 * c.kv_dim * c.dim + 3 * c.hidden_dim * c.dim
    if biases:
        layer += c.q_dim + 2 * c.kv_dim
    return c.vocab_size * c.dim * (2 if output else 1) + c.n_layers * layer + c.dim


def test_smollm2_estimate(smollm2_path):
    with open_gguf(smollm2_path) as f:
        c = ModelConfig.from_gguf(f)
        est = memory.estimate(c, f, "f16", ctx=2048, batch=4)
        hist = memory.type_histogram(f)
        f32_weights = memory.weight_bytes(f, "f32")
        native = memory.weight_bytes(f, "native")
        stored = memory.tensor_bytes(f)
    assert est.n_params == 134_515_008 == _llama_params(c, output=False, biases=False)
    n_vectors = 2 * 30 + 1  # attn_norm, ffn_norm per layer + output_norm, all [576]
    assert est.weight_bytes == 2 * (134_515_008 - n_vectors * 576) + 4 * n_vectors * 576 == 269_100_288
    assert f32_weights == 4 * 134_515_008 and native == stored
    assert est.kv_bytes_per_token == 2 * 30 * 192 * 2 == 23_040  # K and V, 30 layers, 3 heads x 64, f16
    assert est.kv_bytes == 23_040 * 2048 * 4
    # 4 x 512 tokens x (2*576 + 960 + 576 + 3072 + 1536) f16 activations
    # + 4 x 9 heads x 512 x 2048 f32 scores + 4 x 49152 f32 logits
    assert est.workspace_bytes == 29_884_416 + 150_994_944 + 786_432
    assert est.total_bytes == est.weight_bytes + est.kv_bytes + est.workspace_bytes
    assert est.bytes_per_param == pytest.approx(269_100_288 / 134_515_008)
    assert {k: v["count"] for k, v in hist.items()} == {"Q4_1": 210, "Q8_0": 1, "F32": 61}
    assert list(hist) == ["Q4_1", "Q8_0", "F32"]  # largest first
    assert hist["Q8_0"]["n_elements"] == 49152 * 576 and hist["Q8_0"]["nbytes"] == 49152 * 576 // 32 * 34


def test_qwen_estimate(qwen_path):
    with open_gguf(qwen_path) as f:
        c = ModelConfig.from_gguf(f)
        est = memory.estimate(c, f, "f32", batch=2)
        hist = memory.type_histogram(f)
    assert est.n_params == 630_167_424 == _llama_params(c, output=True, biases=True)
    assert est.ctx == 32768  # default: the model's context
    assert est.kv_bytes_per_token == 2 * 24 * 128 * 4 == 24_576
    assert est.kv_bytes == 24_576 * 32768 * 2
    assert est.weight_bytes == 4 * 630_167_424
    counts = {k: v["count"] for k, v in hist.items()}
    assert counts == {"Q5_0": 133, "Q8_0": 13, "Q6_K": 12, "Q4_K": 12, "F32": 121}


def test_synthetic_matrix_and_vector_split(tmp_path):
    path = write_synthetic_model(tmp_path / "g.gguf", "gpt2", vocab=BYTE_VOCAB, dtype="q8_0")
    with open_gguf(path) as f:
        c = ModelConfig.from_gguf(f)
        vectors = sum(i.n_elements for i in f.tensors.values() if len(i.shape) == 1)
        matrices = sum(i.n_elements for i in f.tensors.values() if len(i.shape) == 2)
        assert memory.weight_bytes(f, "bf16") == 2 * matrices + 4 * vectors
        assert memory.weight_bytes(f, "native") == matrices // 32 * 34 + 4 * vectors
        assert memory.kv_bytes_per_token(c, "bf16") == 2 * 2 * 64 * 2
        with pytest.raises(ValueError, match="compute dtype 'int4'"):
            memory.estimate(c, f, "int4")
        with pytest.raises(ValueError, match="ctx"):
            memory.estimate(c, f, "f16", ctx=0)
