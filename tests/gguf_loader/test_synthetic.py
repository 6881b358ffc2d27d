"""The synthetic-model writer: llama.cpp's layout (checked with gguf-py), HF transformers loads it."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from gguf_loader.synthetic import BYTE_VOCAB, VOCAB_FILES, write_synthetic_model

T = gguf.GGMLQuantizationType


def _tensors(path) -> dict[str, gguf.ReaderTensor]:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def _shape(t: gguf.ReaderTensor) -> tuple[int, ...]:
    return tuple(int(d) for d in reversed(t.shape))  # numpy order


def test_llama_layout_and_keys(tmp_path):
    path = write_synthetic_model(tmp_path / "m.gguf", "llama", n_layers=3, dim=64, n_heads=4, n_kv_heads=2,
                                 hidden_dim=96, vocab=BYTE_VOCAB, vocab_size=300)
    reader = gguf.GGUFReader(path)
    fields = {k: f.contents() for k, f in reader.fields.items()}
    assert fields["general.architecture"] == "llama"
    keys = ("block_count", "embedding_length", "feed_forward_length", "attention.head_count",
            "attention.head_count_kv", "rope.dimension_count", "vocab_size")
    assert [fields[f"llama.{k}"] for k in keys] == [3, 64, 96, 4, 2, 16, 300]
    tensors = _tensors(path)
    assert len(tensors) == 2 + 9 * 3 + 1
    assert _shape(tensors["token_embd.weight"]) == (300, 64)
    assert _shape(tensors["output.weight"]) == (300, 64)
    assert _shape(tensors["blk.2.attn_k.weight"]) == (32, 64)
    assert _shape(tensors["blk.2.ffn_gate.weight"]) == (96, 64)
    assert _shape(tensors["blk.2.ffn_down.weight"]) == (64, 96)
    assert tensors["blk.0.attn_norm.weight"].tensor_type == T.F32


def test_qwen2_biases_and_tied_output(tmp_path):
    tensors = _tensors(write_synthetic_model(tmp_path / "m.gguf", "qwen2", vocab=BYTE_VOCAB, tied=True,
                                             dtype="f16"))
    assert "output.weight" not in tensors
    assert tensors["blk.1.attn_q.weight"].tensor_type == T.F16
    for name, size in (("attn_q", 64), ("attn_k", 32), ("attn_v", 32)):
        bias = tensors[f"blk.1.{name}.bias"]
        assert (bias.tensor_type, _shape(bias)) == (T.F32, (size,))


def test_phi3_fused_tensors_and_long_rope(tmp_path):
    path = write_synthetic_model(tmp_path / "m.gguf", "phi3", dim=96, n_heads=3, n_kv_heads=1, hidden_dim=128,
                                 vocab=BYTE_VOCAB, dtype="q8_0", context_length=4096,
                                 original_context_length=1024)
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    assert _shape(tensors["blk.0.attn_qkv.weight"]) == (96 + 2 * 32, 96)  # rows q|k|v
    assert _shape(tensors["blk.0.ffn_up.weight"]) == (2 * 128, 96)  # rows gate|up
    assert tensors["blk.0.ffn_up.weight"].tensor_type == T.Q8_0
    assert "blk.0.ffn_gate.weight" not in tensors
    short = tensors["rope_factors_short.weight"]
    assert (short.tensor_type, _shape(short)) == (T.F32, (16,))
    fields = {k: f.contents() for k, f in reader.fields.items()}
    assert fields["phi3.rope.scaling.original_context_length"] == 1024
    assert fields["phi3.rope.scaling.attn_factor"] == pytest.approx(np.sqrt(1 + np.log(4) / np.log(1024)))


def test_gpt2_biases_positions_and_output_copy(tmp_path):
    tensors = _tensors(write_synthetic_model(tmp_path / "m.gguf", "gpt2", n_heads=4, vocab=BYTE_VOCAB))
    assert _shape(tensors["position_embd.weight"]) == (1024, 64)
    assert _shape(tensors["blk.0.attn_qkv.weight"]) == (192, 64)
    assert _shape(tensors["blk.0.attn_qkv.bias"]) == (192,)
    assert _shape(tensors["blk.0.ffn_up.weight"]) == (256, 64)
    assert _shape(tensors["blk.0.ffn_up.bias"]) == (256,)
    assert {"output_norm.bias", "blk.1.attn_norm.bias", "blk.1.ffn_norm.bias", "blk.1.ffn_down.bias",
            "blk.1.attn_output.bias"} <= tensors.keys()
    np.testing.assert_array_equal(tensors["output.weight"].data, tensors["token_embd.weight"].data)
    with pytest.raises(ValueError, match="n_kv_heads 2 != n_heads 4"):
        write_synthetic_model(tmp_path / "bad.gguf", "gpt2", n_kv_heads=2, vocab=BYTE_VOCAB)


def test_seeded_and_deterministic(tmp_path):
    a = write_synthetic_model(tmp_path / "a.gguf", "llama", vocab=BYTE_VOCAB, seed=1)
    b = write_synthetic_model(tmp_path / "b.gguf", "llama", vocab=BYTE_VOCAB, seed=1)
    c = write_synthetic_model(tmp_path / "c.gguf", "llama", vocab=BYTE_VOCAB, seed=2)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    embd = _tensors(a)["token_embd.weight"].data
    assert 0.018 < float(np.std(embd)) < 0.022


def test_same_seed_same_values_in_every_dtype(tmp_path):
    values = {}
    for dtype in ("f32", "f16", "q8_0"):
        path = write_synthetic_model(tmp_path / f"{dtype}.gguf", "qwen2", vocab=BYTE_VOCAB, dtype=dtype,
                                     seed=3)
        t = _tensors(path)["blk.1.ffn_down.weight"]
        values[dtype] = gguf.quants.dequantize(t.data, t.tensor_type)
    np.testing.assert_array_equal(values["q8_0"], values["f32"])
    np.testing.assert_allclose(values["f16"], values["f32"], rtol=2**-11)


def test_preset_cli_writes_real_shapes(tmp_path, capsys):
    from gguf_loader.synthetic import main

    assert main([str(tmp_path / "q.gguf"), "qwen2.5-0.5b", "--layers", "1", "--dtype", "q8_0"]) == 0
    assert "q.gguf: " in capsys.readouterr().out
    tensors = _tensors(tmp_path / "q.gguf")
    assert _shape(tensors["token_embd.weight"]) == (151936, 896) and "output.weight" not in tensors
    assert _shape(tensors["blk.0.ffn_up.weight"]) == (4864, 896)
    assert _shape(tensors["blk.0.attn_k.weight"]) == (128, 896)
    assert tensors["blk.0.attn_k.weight"].tensor_type == T.Q8_0


def test_real_vocab_is_copied(tmp_path, vocab_dir):
    path = write_synthetic_model(tmp_path / "m.gguf", "phi3", vocab=vocab_dir / VOCAB_FILES["phi3"])
    want = gguf.GGUFReader(vocab_dir / VOCAB_FILES["phi3"]).fields
    got = gguf.GGUFReader(path).fields
    keys = sorted(k for k in want if k.startswith("tokenizer."))
    assert keys == sorted(k for k in got if k.startswith("tokenizer."))
    for key in keys:
        assert got[key].contents() == want[key].contents(), key
    assert _shape(_tensors(path)["token_embd.weight"]) == (32064, 64)
    with pytest.raises(ValueError, match="vocab_size 100 != 32064"):
        write_synthetic_model(tmp_path / "bad.gguf", "phi3", vocab=vocab_dir / VOCAB_FILES["phi3"],
                              vocab_size=100)


def test_byte_vocab_tokens():
    from gguf_loader.synthetic_vocab import byte_vocab

    kv = byte_vocab(1000)
    tokens = kv["tokenizer.ggml.tokens"][0]
    assert len(tokens) == 1000
    assert tokens[ord("a")] == "a" and tokens[ord(" ")] == "Ġ" and tokens[256] == "<|endoftext|>"
    assert tokens[257] == "Ġe" and tokens[257 + 702] == "<|reserved_0|>" and tokens[-1] == "<|reserved_40|>"
    assert kv["tokenizer.ggml.merges"][0][:2] == ["Ġ e", "Ġ t"]


@pytest.mark.parametrize("arch, options", [
    ("llama", {"tied": True}),
    ("qwen2", {"dtype": "f16"}),
    ("phi3", {"dtype": "q8_0", "dim": 96, "n_heads": 3, "n_kv_heads": 1}),
    ("gpt2", {}),
])
def test_hf_transformers_loads_every_weight(tmp_path, arch, options):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    write_synthetic_model(tmp_path / "m.gguf", arch, vocab=BYTE_VOCAB, **options)
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file="m.gguf", dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, 512)
    assert 0.05 < float(logits.std()) < 1.0  # random weights at scale 0.02 give tame logits
