"""ModelConfig from real and synthetic files, llama.cpp's defaults, the tensor tables and load_weights."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gguf_loader.arch import SUPPORTED_ARCHITECTURES, ModelConfig, RopeScaling, load_weights
from gguf_loader.errors import ArchitectureError
from gguf_loader.reader import open_gguf
from gguf_loader.synthetic import BYTE_VOCAB, write_synthetic_model


def _rewrite(src, dst, *, arch=None, drop_keys=(), set_keys=None, drop_tensors=(), add_tensors=None):
    """Copy a GGUF with gguf-py, dropping/overriding keys and tensors (to build edge cases)."""
    reader = gguf.GGUFReader(src)
    old_arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch or old_arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in drop_keys:
            continue
        sub = field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), field.types[0], sub)
    for key, (value, vtype, sub) in (set_keys or {}).items():
        writer.add_key_value(key, value, vtype, sub)
    for t in reader.tensors:
        if t.name not in drop_tensors:
            writer.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    for name, array in (add_tensors or {}).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


@pytest.fixture(scope="module")
def llama_file(tmp_path_factory):
    return write_synthetic_model(tmp_path_factory.mktemp("arch") / "llama.gguf", "llama", vocab=BYTE_VOCAB)


def test_smollm2_config(smollm2_path):
    with open_gguf(smollm2_path) as f:
        c = ModelConfig.from_gguf(f)
    assert (c.arch, c.n_layers, c.dim, c.hidden_dim, c.n_heads, c.n_kv_heads, c.head_dim) == (
        "llama", 30, 576, 1536, 9, 3, 64)
    assert (c.vocab_size, c.context_length, c.rope, c.rope_theta, c.rope_dim) == (
        49152, 8192, "normal", 1e5, 64)
    assert c.norm_eps == np.float32(1e-5) and (c.norm, c.activation) == ("rmsnorm", "swiglu")
    assert c.tied_embeddings and not c.qkv_bias and not c.learned_pos and c.rope_scaling is None
    assert (c.q_dim, c.kv_dim, c.qkv_dim, c.n_rep) == (576, 192, 960, 3)


def test_qwen_coder_config(qwen_path):
    with open_gguf(qwen_path) as f:
        c = ModelConfig.from_gguf(f)
    assert (c.arch, c.n_layers, c.dim, c.hidden_dim, c.n_heads, c.n_kv_heads, c.head_dim) == (
        "qwen2", 24, 896, 4864, 14, 2, 64)
    assert (c.vocab_size, c.context_length, c.rope, c.rope_theta) == (151936, 32768, "neox", 1e6)
    assert c.norm_eps == np.float32(1e-6)
    assert c.qkv_bias and not c.tied_embeddings


def test_real_models_every_tensor_used_once_raw(smollm2_path, qwen_path):
    for path, n_tensors in ((smollm2_path, 272), (qwen_path, 291)):
        seen: list[tuple[str, int]] = []

        def record(name, data, seen=seen):
            seen.append((name, data.nbytes))  # data: the raw uint8 bytes
            return name

        with open_gguf(path) as f:
            config = ModelConfig.from_gguf(f)
            w = load_weights(f, config, record, raw=True)
            assert sorted(seen) == sorted((name, info.nbytes) for name, info in f.tensors.items())
        assert len(seen) == n_tensors and len(w.layers) == config.n_layers
        assert w.layers[5].wk == "blk.5.attn_k.weight" and w.layers[5].wqkv is None
        if config.tied_embeddings:
            assert w.output == "token_embd.weight"
        else:
            assert w.output == "output.weight" and w.layers[0].bq == "blk.0.attn_q.bias"


@pytest.mark.parametrize("arch", SUPPORTED_ARCHITECTURES)
def test_synthetic_weights_match_gguf_py(tmp_path, arch):
    path = write_synthetic_model(tmp_path / "m.gguf", arch, vocab=BYTE_VOCAB, dtype="q8_0")
    oracle = {t.name: t for t in gguf.GGUFReader(path).tensors}

    def want(name):
        t = oracle[name]
        return gguf.quants.dequantize(t.data, t.tensor_type).reshape(tuple(int(d) for d in reversed(t.shape)))

    with open_gguf(path) as f:
        config = ModelConfig.from_gguf(f)
        w = load_weights(f, config, lambda name, a: np.array(a))
        fused = load_weights(f, config, lambda name, a: np.array(a), fuse=True)
    np.testing.assert_array_equal(w.token_embd, want("token_embd.weight"))
    np.testing.assert_array_equal(w.output_norm, want("output_norm.weight"))
    layer, fused_layer = w.layers[1], fused.layers[1]
    if arch in ("llama", "qwen2"):
        np.testing.assert_array_equal(layer.wk, want("blk.1.attn_k.weight"))
        np.testing.assert_array_equal(
            fused_layer.wqkv, np.concatenate([layer.wq, layer.wk, layer.wv]))  # [qkv_dim, dim]
        np.testing.assert_array_equal(fused_layer.w_gate_up, np.concatenate([layer.w_gate, layer.w_up]))
        assert fused_layer.wq is None and fused_layer.w_gate is None and fused_layer.w_up is None
    else:
        np.testing.assert_array_equal(layer.wqkv, want("blk.1.attn_qkv.weight"))
    if arch == "qwen2":
        np.testing.assert_array_equal(fused_layer.bqkv, np.concatenate([layer.bq, layer.bk, layer.bv]))
    if arch == "phi3":
        assert layer.w_gate_up.shape == (2 * config.hidden_dim, config.dim) and layer.w_up is None
    if arch == "gpt2":
        np.testing.assert_array_equal(w.pos_embd, want("position_embd.weight"))
        np.testing.assert_array_equal(layer.b_up, want("blk.1.ffn_up.bias"))
        assert w.output_norm_bias.shape == (config.dim,) and config.learned_pos and config.rope == "none"
        assert (config.norm, config.activation) == ("layernorm", "gelu")


def test_phi3_long_rope_factors(tmp_path):
    path = write_synthetic_model(tmp_path / "m.gguf", "phi3", vocab=BYTE_VOCAB, context_length=4096,
                                 original_context_length=1024)
    oracle = {t.name: t.data for t in gguf.GGUFReader(path).tensors}
    with open_gguf(path) as f:
        c = ModelConfig.from_gguf(f)
        load_weights(f, c)  # the factor tensors belong to the config, not "unknown" tensors
    scaling = c.rope_scaling
    assert isinstance(scaling, RopeScaling) and scaling.original_context_length == 1024
    assert scaling.long_factors == tuple(float(v) for v in oracle["rope_factors_long.weight"])
    assert scaling.factors(1024) == scaling.short_factors and scaling.factors(1025) == scaling.long_factors
    assert scaling.attn_factor == pytest.approx(np.sqrt(1 + np.log(4) / np.log(1024)), rel=1e-6)
    assert c.rope == "neox" and len(scaling.short_factors) == c.rope_dim // 2


def test_llama_cpp_defaults_for_absent_keys(tmp_path, llama_file):
    dropped = ("llama.attention.head_count_kv", "llama.rope.freq_base", "llama.rope.dimension_count",
               "llama.attention.layer_norm_rms_epsilon", "llama.vocab_size")
    path = _rewrite(llama_file, tmp_path / "d.gguf", drop_keys=dropped,
                    drop_tensors={f"blk.{i}.attn_{x}.weight" for i in (0, 1) for x in "kv"},
                    add_tensors={f"blk.{i}.attn_{x}.weight": np.zeros((64, 64), np.float32)
                                 for i in (0, 1) for x in "kv"})
    with open_gguf(path) as f:
        c = ModelConfig.from_gguf(f)
        load_weights(f, c)
    assert (c.n_kv_heads, c.rope_theta, c.rope_dim, c.norm_eps, c.vocab_size) == (4, 10000.0, 16, 1e-5, 512)


@pytest.mark.parametrize("case, match", [
    ({"arch": "mamba"}, "unsupported architecture 'mamba'; supported: llama, qwen2, phi3, gpt2"),
    ({"drop_keys": ("llama.block_count",)}, "required key llama.block_count is missing"),
    ({"drop_keys": ("llama.attention.head_count",),
      "set_keys": {"llama.attention.head_count": ("4", gguf.GGUFValueType.STRING, None)}},
     "llama.attention.head_count must be an integer, got str '4'"),
    ({"drop_keys": ("llama.attention.head_count_kv",),
      "set_keys": {"llama.attention.head_count_kv": ([2, 2], gguf.GGUFValueType.ARRAY,
                                                     gguf.GGUFValueType.UINT32)}},
     "head_count_kv must be an integer.*per-layer arrays are not supported"),
    ({"drop_keys": ("llama.attention.head_count_kv",),
      "set_keys": {"llama.attention.head_count_kv": (3, gguf.GGUFValueType.UINT32, None)}},
     "n_heads 4 is not a multiple of n_kv_heads 3"),
])
def test_config_errors_name_the_key(tmp_path, llama_file, case, match):
    with open_gguf(_rewrite(llama_file, tmp_path / "bad.gguf", **case)) as f:
        with pytest.raises(ArchitectureError, match=match):
            ModelConfig.from_gguf(f)


@pytest.mark.parametrize("case, match", [
    ({"drop_tensors": ("blk.1.ffn_gate.weight",)},
     r"missing tensor blk\.1\.ffn_gate\.weight \(llama w_gate\)"),
    ({"drop_tensors": ("blk.0.attn_k.weight",),
      "add_tensors": {"blk.0.attn_k.weight": np.zeros((64, 32), "f4")}},
     r"tensor blk\.0\.attn_k\.weight has shape \[64, 32\], expected \[32, 64\]"),
    ({"add_tensors": {"blk.2.attn_norm.weight": np.ones(64, "f4")}},
     r"1 tensor\(s\) not used by llama with 2 layers: blk\.2\.attn_norm\.weight"),
])
def test_weight_errors_name_the_tensor(tmp_path, llama_file, case, match):
    with open_gguf(_rewrite(llama_file, tmp_path / "bad.gguf", **case)) as f:
        config = ModelConfig.from_gguf(f)
        with pytest.raises(ArchitectureError, match=match):
            load_weights(f, config)


def test_qwen2_requires_biases_and_ties_output(tmp_path):
    path = write_synthetic_model(tmp_path / "q.gguf", "qwen2", vocab=BYTE_VOCAB, tied=True)
    with open_gguf(path) as f:
        c = ModelConfig.from_gguf(f)
        w = load_weights(f, c)
    assert c.tied_embeddings and w.output is w.token_embd
    bad = _rewrite(path, tmp_path / "bad.gguf", drop_tensors=("blk.0.attn_v.bias",))
    with open_gguf(bad) as f, pytest.raises(ArchitectureError, match=r"missing tensor blk\.0\.attn_v\.bias"):
        load_weights(f, ModelConfig.from_gguf(f))


def test_fuse_of_raw_bytes_needs_a_convert(llama_file):
    with open_gguf(llama_file) as f, pytest.raises(ValueError, match="fuse=True"):
        load_weights(f, ModelConfig.from_gguf(f), raw=True, fuse=True)


def test_fuse_of_raw_bytes_concatenates_what_convert_returns(llama_file):
    with open_gguf(llama_file) as f:
        def convert(name, raw):
            info = f.tensors[name]
            return np.frombuffer(raw, np.uint8).copy() if len(info.shape) < 2 else f.dequantize(name) + 1

        c = ModelConfig.from_gguf(f)
        fused = load_weights(f, c, convert=convert, raw=True, fuse=True).layers[0]
        wq, wk, wv = (f.dequantize(f"blk.0.attn_{p}.weight") + 1 for p in "qkv")
    np.testing.assert_array_equal(fused.wqkv, np.concatenate([wq, wk, wv]))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arch=st.sampled_from(SUPPORTED_ARCHITECTURES), n_layers=st.integers(1, 3),
       head_dim=st.sampled_from([8, 16]), n_kv_heads=st.integers(1, 3), group=st.integers(1, 3),
       hidden=st.integers(1, 4), tied=st.booleans())
def test_synthetic_round_trip(tmp_path, arch, n_layers, head_dim, n_kv_heads, group, hidden, tied):
    """Whatever the writer is asked for, from_gguf reads back and load_weights accepts."""
    n_heads = n_kv_heads * (1 if arch == "gpt2" else group)
    kv = n_heads if arch == "gpt2" else n_kv_heads
    dim = n_heads * head_dim
    hidden_dim = 4 * dim if arch == "gpt2" else 32 * hidden
    path = write_synthetic_model(tmp_path / f"{arch}.gguf", arch, n_layers=n_layers, dim=dim,
                                 n_heads=n_heads, n_kv_heads=kv, hidden_dim=hidden_dim, vocab=BYTE_VOCAB,
                                 vocab_size=300, tied=tied)
    with open_gguf(path) as f:
        c = ModelConfig.from_gguf(f)
        w = load_weights(f, c, fuse=True)
    assert (c.arch, c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.head_dim, c.hidden_dim, c.vocab_size) == (
        arch, n_layers, dim, n_heads, kv, head_dim, hidden_dim, 300)
    assert c.tied_embeddings == tied and (w.output is w.token_embd) == tied
    assert len(w.layers) == n_layers and w.layers[-1].wqkv.shape == (c.qkv_dim, dim)
    if c.activation == "swiglu":
        assert w.layers[0].w_gate_up.shape == (2 * hidden_dim, dim)
