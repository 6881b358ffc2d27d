"""The reader against gguf-py's GGUFReader on the real files, and its API on a hand-built file."""

from __future__ import annotations

import tracemalloc

import gguf
import numpy as np
import pytest

from gguf_loader import quants
from gguf_loader.constants import GGMLType, GGUFValueType
from gguf_loader.errors import GGUFError, GGUFTensorError
from gguf_loader.reader import TensorInfo, open_gguf
from tests.gguf_loader.gguf_builder import CHAT_TEMPLATE, small_model

# ggml-vocab-llama-spm: a vocab-only file with float scores and int token types, and gguf-py reads
# it in ~3 s (the 150k-token qwen2 vocab takes it ~14 s; the Qwen model already covers that vocab).
REAL_FILES = ["smollm2_path", "qwen_path", "vocab_spm_path"]


@pytest.fixture(scope="session")
def vocab_spm_path(vocab_dir):
    return vocab_dir / "ggml-vocab-llama-spm.gguf"


@pytest.fixture(scope="module")
def oracle():
    """gguf-py readers, built once per file (they are slow: seconds per file)."""
    cache: dict = {}

    def get(path):
        if path not in cache:
            cache[path] = gguf.GGUFReader(path)
        return cache[path]

    return get


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.gguf"
    path.write_bytes(small_model())
    with open_gguf(path) as g:
        yield g


@pytest.mark.parametrize("fixture", REAL_FILES)
def test_metadata_matches_gguf_py(request, oracle, fixture):
    path = request.getfixturevalue(fixture)
    reader = oracle(path)
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    with open_gguf(path) as g:
        assert list(g.metadata) == list(fields)
        assert g.version == reader.fields["GGUF.version"].contents()
        assert g.alignment == reader.alignment and g.data_offset == reader.data_offset
        for key, field in fields.items():
            value, vtype = g.metadata[key], g.metadata_types[key]
            assert vtype == field.types[0], key
            if vtype is not GGUFValueType.ARRAY:
                expected = field.contents()
                assert value == expected and type(value) is type(expected), key
            elif field.types[1] == GGUFValueType.STRING:
                assert g.array_types[key] is GGUFValueType.STRING
                assert value == field.contents(), key
            else:
                assert g.array_types[key] == field.types[1], key
                expected = np.concatenate([field.parts[i] for i in field.data])
                assert value.ndim == 1 and value.dtype == expected.dtype, key
                np.testing.assert_array_equal(value, expected, err_msg=key)


@pytest.mark.parametrize("fixture", REAL_FILES)
def test_tensor_infos_match_gguf_py(request, oracle, fixture):
    path = request.getfixturevalue(fixture)
    reader = oracle(path)
    expected = [
        TensorInfo(
            t.name,
            GGMLType(int(t.tensor_type)),
            tuple(int(d) for d in t.shape),
            tuple(int(d) for d in reversed(t.shape)),
            int(t.data_offset),
            int(t.n_bytes),
            int(t.n_elements),
        )
        for t in reader.tensors
    ]
    with open_gguf(path) as g:
        assert list(g.tensors.values()) == expected
        assert g.file_size == path.stat().st_size


@pytest.mark.parametrize("fixture", ["smollm2_path", "qwen_path"])
def test_every_tensor_dequantises_like_gguf_py(request, oracle, fixture):
    """Bit-exact on every tensor; tensors over 4M values go through in row slices to bound memory."""
    path = request.getfixturevalue(fixture)
    with open_gguf(path) as g:
        for t in oracle(path).tensors:
            info = g.tensors[t.name]
            if info.n_elements <= 1 << 22:
                ours = g.dequantize(t.name)
                theirs = gguf.quants.dequantize(t.data, t.tensor_type)
                assert ours.dtype == np.float32 and ours.shape == theirs.shape, t.name
                assert np.array_equal(ours, theirs.astype(np.float32)), t.name
                continue
            row_elems = info.dims[0]
            n_rows = info.n_elements // row_elems
            rows = g.raw(t.name).reshape(n_rows, -1)  # [n_rows, row_bytes]
            their_rows = t.data.reshape(n_rows, -1)  # [n_rows, row_bytes] (or row_elems for F32/F16)
            for r in range(0, rows.shape[0], 4096):
                block = rows[r : r + 4096]
                ours = quants.dequantize(block.reshape(-1), info.ggml_type, block.shape[0] * row_elems)
                theirs = gguf.quants.dequantize(their_rows[r : r + 4096], t.tensor_type).reshape(-1)
                assert np.array_equal(ours, theirs.astype(np.float32)), (t.name, r)


def test_open_reads_no_tensor_data(qwen_path):
    """Opening the 491 MB file allocates a few MB (the vocab), never the tensor data."""
    tracemalloc.start()
    try:
        with open_gguf(qwen_path) as g:
            peak = tracemalloc.get_traced_memory()[1]
            assert len(g.tensors) == 291
    finally:
        tracemalloc.stop()
    assert peak < 40e6  # 151,936 tokens + 151,387 merges as str; the file is 491 MB


def test_metadata_values_and_types(small):
    m, t = small.metadata, small.metadata_types
    assert m["general.architecture"] == "llama" and t["general.architecture"] is GGUFValueType.STRING
    assert m["llama.block_count"] == 1 and t["llama.block_count"] is GGUFValueType.UINT32
    assert m["llama.rope.freq_base"] == 10000.0 and t["llama.rope.freq_base"] is GGUFValueType.FLOAT32
    assert m["llama.attention.layer_norm_rms_epsilon"] == 1e-5
    assert m["general.flag"] is True and m["general.neg"] == -7
    assert m["tokenizer.ggml.tokens"][4:7] == ["ab", "héllo", "日本"]
    scores = m["tokenizer.ggml.scores"]
    assert scores.dtype == np.float32 and scores.tolist() == [i / 4 for i in range(10)]
    assert not scores.flags.writeable
    assert m["tokenizer.ggml.token_type"].dtype == np.int32
    assert small.array_types["tokenizer.ggml.token_type"] is GGUFValueType.INT32
    nested = m["general.nested"]
    assert small.array_types["general.nested"] is GGUFValueType.ARRAY
    assert nested[0].dtype == np.uint16 and nested[0].tolist() == [1, 2, 3] and nested[1] == ["x", "yz"]
    assert m["tokenizer.chat_template"] == CHAT_TEMPLATE and len(CHAT_TEMPLATE.encode()) > 4096
    assert m["general.bools"].dtype == np.bool_ and m["general.bools"].tolist() == [False, True, True]


def test_tensor_info_and_views(small):
    info = small.tensors["token_embd.weight"]
    assert (info.ggml_type, info.dims, info.shape, info.n_elements) == (
        GGMLType.Q8_0,
        (32, 10),
        (10, 32),
        320,
    )
    assert info.nbytes == 10 * 34 and info.offset == small.data_offset
    raw = small.raw("token_embd.weight")
    assert raw.dtype == np.uint8 and raw.shape == (340,) and not raw.flags.writeable
    assert np.shares_memory(raw, small.raw("token_embd.weight"))  # both views of the one mapping
    with open(small.path, "rb") as fh:
        fh.seek(info.offset)
        assert raw.tobytes() == fh.read(info.nbytes)
    assert small.dequantize("token_embd.weight").shape == (10, 32)
    assert (
        small.dequantize("blk.0.attn_norm.weight").tolist()
        == np.frombuffer(small.raw("blk.0.attn_norm.weight").tobytes(), "<f4").tolist()
    )


def test_unknown_tensor_name(small):
    with pytest.raises(GGUFTensorError, match="no tensor named 'nope'"):
        small.raw("nope")


def test_close_keeps_earlier_views_valid(tmp_path):
    path = tmp_path / "small.gguf"
    path.write_bytes(small_model())
    g = open_gguf(path)
    view = g.raw("output.weight")
    expected = view.tobytes()
    g.close()
    assert view.tobytes() == expected
    with pytest.raises(GGUFError, match="closed"):
        g.raw("output.weight")
