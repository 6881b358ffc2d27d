"""gpu.q8_blocks: which tensors stay Q8_0, and their blocks through the loader's row operations (no GPU)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gguf_loader.arch import ModelConfig, load_weights
from gguf_loader.constants import GGMLType
from gguf_loader.reader import open_gguf
from gguf_loader.synthetic import BYTE_VOCAB, write_synthetic_model
from gpu import q8_blocks
from gpu import reference as ref

ARCHS = {"llama": dict(dim=64, n_heads=2, n_kv_heads=1), "qwen2": dict(dim=64, n_heads=2, n_kv_heads=1),
         "phi3": dict(dim=64, n_heads=2, n_kv_heads=2), "gpt2": dict(dim=64, n_heads=2)}


def _model(tmp_path, arch, dtype="q8_0", tied=False):
    return write_synthetic_model(tmp_path / f"{arch}.gguf", arch, n_layers=2, vocab=BYTE_VOCAB,
                                 vocab_size=300, dtype=dtype, tied=tied, **ARCHS[arch])


@pytest.mark.parametrize("arch", ARCHS)
def test_groups_of_a_q8_0_file_follow_the_fused_matrices(tmp_path, arch):
    with open_gguf(_model(tmp_path, arch)) as f:
        groups = q8_blocks.q8_groups(f, ModelConfig.from_gguf(f))
    layer0 = [g for g in groups if g[0].startswith("blk.0.")]
    want = {"llama": [["blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight"],
                      ["blk.0.ffn_gate.weight", "blk.0.ffn_up.weight"]],
            "phi3": [["blk.0.attn_qkv.weight"], ["blk.0.ffn_up.weight"]],
            "gpt2": [["blk.0.attn_qkv.weight"], ["blk.0.ffn_up.weight"]]}.get(arch)
    if want is None:  # qwen2: the llama layout
        want = [["blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight"],
                ["blk.0.ffn_gate.weight", "blk.0.ffn_up.weight"]]
    for group in want:
        assert group in layer0
    assert ["blk.0.attn_output.weight"] in layer0 and ["blk.0.ffn_down.weight"] in layer0
    assert len(layer0) == len(want) + 2
    assert ["token_embd.weight"] in groups and ["output.weight"] in groups
    assert len(groups) == 2 + 2 * len(layer0)


def test_float_files_keep_nothing_as_q8_0(tmp_path):
    with open_gguf(_model(tmp_path, "llama", dtype="f16")) as f:
        assert q8_blocks.q8_groups(f, ModelConfig.from_gguf(f)) == []


def test_a_group_with_one_other_type_is_dequantised(tmp_path):
    """The synthetic writer stores every matrix alike; a fused part of another type drops its whole group."""
    with open_gguf(_model(tmp_path, "llama")) as f:
        config = ModelConfig.from_gguf(f)
        info = f.tensors["blk.1.attn_k.weight"]
        f.tensors["blk.1.attn_k.weight"] = dataclasses.replace(info, ggml_type=GGMLType.F16)
        names = {n for g in q8_blocks.q8_groups(f, config) for n in g}
    assert "blk.1.attn_q.weight" not in names and "blk.1.attn_v.weight" not in names
    assert "blk.0.attn_q.weight" in names and "blk.1.attn_output.weight" in names


@pytest.mark.parametrize("arch", ARCHS)
def test_blocks_fused_by_the_loader_dequantise_to_the_fused_floats(tmp_path, arch):
    with open_gguf(_model(tmp_path, arch, tied=arch == "qwen2")) as f:
        config = ModelConfig.from_gguf(f)
        q8 = {n for g in q8_blocks.q8_groups(f, config) for n in g}

        def convert(name, raw):
            return q8_blocks.as_blocks(raw, f.tensors[name].shape) if name in q8 else f.dequantize(name)

        blocks = load_weights(f, config, convert=convert, raw=True, fuse=True)
        floats = load_weights(f, config, fuse=True)
    for field in ("wqkv", "wo", "w_gate_up", "w_up", "w_down"):
        b, want = getattr(blocks.layers[1], field), getattr(floats.layers[1], field)
        if want is None:
            continue
        assert b.dtype == q8_blocks.BLOCK
        np.testing.assert_array_equal(ref.dequant_q8(*q8_blocks.split(b)), want)
    np.testing.assert_array_equal(ref.dequant_q8(*q8_blocks.split(blocks.output)), floats.output)
    assert (blocks.output is blocks.token_embd) == (arch == "qwen2")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mixed", [False, True])
def test_expansion_weights_are_the_largest_q8_0_layer_matrix_the_loader_builds(tmp_path, arch, mixed):
    """The expansion buffer that cuda_weights.device_bytes counts and load_device_weights reserves: the
    largest Q8_0 matrix of the loader's fused layers (a whole ffn group dequantised when `mixed`)."""
    with open_gguf(_model(tmp_path, arch)) as f:
        config = ModelConfig.from_gguf(f)
        tensors = dict(f.tensors)
        if mixed:  # ffn_up of another type (only while the groups are chosen: its bytes stay Q8_0)
            for i in range(config.n_layers):
                name = f"blk.{i}.ffn_up.weight"
                f.tensors[name] = dataclasses.replace(f.tensors[name], ggml_type=GGMLType.F16)
        groups = q8_blocks.q8_groups(f, config)
        f.tensors.update(tensors)
        q8 = {n for g in groups for n in g}
        assert mixed == ("blk.0.ffn_up.weight" not in q8)

        def convert(name, raw):
            return q8_blocks.as_blocks(raw, f.tensors[name].shape) if name in q8 else f.dequantize(name)

        blocks = load_weights(f, config, convert=convert, raw=True, fuse=True)
        want = max(b.size * q8_blocks.BLOCK_WEIGHTS for lw in blocks.layers
                   for b in (lw.wqkv, lw.wo, lw.w_gate_up, lw.w_up, lw.w_down)
                   if b is not None and b.dtype == q8_blocks.BLOCK)
        assert q8_blocks.expansion_weights(f, groups) == want
        assert q8_blocks.expansion_weights(f, [g for g in groups if not g[0].startswith("blk.")]) == 0


@settings(max_examples=50, deadline=None)
@given(rows=st.integers(1, 5), blocks_per_row=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_split_and_dequantise_match_the_loader(rows, blocks_per_row, seed):
    from gguf_loader.quants import dequantize

    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, rows * blocks_per_row * 34, dtype=np.uint8)
    scales = raw.reshape(-1, 34)[:, :2].copy().view(np.float16)
    raw.reshape(-1, 34)[:, :2] = np.where(np.isfinite(scales), scales, 1.0).astype(np.float16).view(np.uint8)
    b = q8_blocks.as_blocks(raw, (rows, 32 * blocks_per_row))
    quants, d = q8_blocks.split(b)
    assert quants.shape == (rows, 32 * blocks_per_row) and d.shape == (rows, blocks_per_row)
    assert quants.dtype == np.int8 and d.dtype == np.float16
    want = dequantize(raw, GGMLType.Q8_0, rows * 32 * blocks_per_row).reshape(rows, -1)
    np.testing.assert_array_equal(ref.dequant_q8(quants, d), want)


@pytest.mark.parametrize("asset", ["qwen", "smollm2"])
def test_real_files_keep_only_whole_q8_0_groups(request, asset):
    """The real Qwen2.5-Coder Q4_K_M mix (Q8_0 next to Q5_0, Q4_K, Q6_K) and SmolLM2 Q4_1 (Q8_0 embeddings):
    each kept group is Q8_0 throughout, and its blocks split and dequantise to the loader's values."""
    with open_gguf(request.getfixturevalue(f"{asset}_path")) as f:
        config = ModelConfig.from_gguf(f)
        groups = q8_blocks.q8_groups(f, config)
        q8_in_file = {n for n, info in f.tensors.items() if info.ggml_type == GGMLType.Q8_0}
        kept = {n for g in groups for n in g}
        assert kept <= q8_in_file
        for group in groups:
            assert all(f.tensors[n].ggml_type == GGMLType.Q8_0 for n in group)
        fused_parts = {"attn_q", "attn_k", "attn_v", "ffn_gate", "ffn_up"}
        for name in q8_in_file - kept:  # left out: a part of a fused group with a part of another type
            assert name.split(".")[-2] in fused_parts or len(f.tensors[name].shape) != 2, name
        for name in sorted(kept)[:3]:
            info = f.tensors[name]
            quants, scales = q8_blocks.split(q8_blocks.as_blocks(f.raw(name), info.shape))
            np.testing.assert_array_equal(ref.dequant_q8(quants, scales), f.dequantize(name))
    # Qwen: attn_v is Q8_0 but attn_q/k are Q5_0, so only the head stays Q8_0; SmolLM2: the tied embeddings
    assert groups == {"qwen": [["output.weight"]], "smollm2": [["token_embd.weight"]]}[asset]
