"""Hostile GGUF files: one hand-built file per validation rule, then hypothesis mutating a valid one.

Every bad file must raise the named `GGUFError` subclass with the field, tensor or offset in the
message — never IndexError, struct.error, UnicodeDecodeError, OverflowError or MemoryError.
"""

from __future__ import annotations

import os
import struct
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gguf_loader.constants import GGMLType
from gguf_loader.errors import (
    GGUFError,
    GGUFFormatError,
    GGUFOpenError,
    GGUFTensorError,
    GGUFTruncatedError,
    GGUFValueError,
    UnsupportedTypeError,
)
from gguf_loader.reader import open_gguf
from tests.gguf_loader.gguf_builder import V, array, gguf_bytes, kv, small_model, string, tensor_info

HUGE = 1 << 60


def write(tmp_path, data: bytes, name: str = "bad.gguf"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def check(tmp_path, data: bytes, error: type[GGUFError], *fragments: str) -> GGUFError:
    """Opening `data` raises exactly `error` (or a subclass) whose message has every fragment."""
    with pytest.raises(error) as info:
        open_gguf(write(tmp_path, data))
    for fragment in fragments:
        assert fragment in str(info.value)
    return info.value


def one_tensor(dims, gtype=GGMLType.F32, offset=0, data_bytes=None, kvs=()) -> bytes:
    nbytes = data_bytes if data_bytes is not None else 4 * int(np.prod(dims))
    return gguf_bytes(kvs, [tensor_info("w", dims, gtype, offset)], b"\x01" * nbytes)


# --- header -------------------------------------------------------------------------------------


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(GGUFOpenError, match="cannot open"):
        open_gguf(tmp_path / "absent.gguf")
    with pytest.raises(GGUFOpenError, match="cannot open"):
        open_gguf(tmp_path)


@pytest.mark.parametrize("size", [0, 1, 23])
def test_shorter_than_header(tmp_path, size):
    check(tmp_path, gguf_bytes()[:size], GGUFTruncatedError, f"{size} bytes", "24-byte header")


def test_bad_magic(tmp_path):
    check(tmp_path, gguf_bytes(magic=b"GGML"), GGUFFormatError, "bad magic b'GGML' at offset 0")


@pytest.mark.parametrize("version", [0, 1, 4, 0xFFFFFFFF])
def test_unsupported_version(tmp_path, version):
    check(tmp_path, gguf_bytes(version=version), GGUFFormatError, f"version {version} at offset 4")


def test_big_endian_version_is_named(tmp_path):
    data = b"GGUF" + struct.pack(">IQQ", 3, 0, 0)
    check(tmp_path, data, GGUFFormatError, "big-endian")


@pytest.mark.parametrize("version", [2, 3])
def test_v2_and_v3_open(tmp_path, version):
    data = gguf_bytes(
        [kv("a", V.UINT8, 7)], [tensor_info("w", (4,), GGMLType.F32, 0)], b"\x01" * 16, version=version
    )
    with open_gguf(write(tmp_path, data)) as g:
        assert (g.version, g.metadata, list(g.tensors)) == (version, {"a": 7}, ["w"])


@pytest.mark.parametrize(("n_tensors", "n_kv"), [(HUGE, 0), (0, HUGE), (2**64 - 1, 2**64 - 1)])
def test_header_counts_bounded_by_file_size(tmp_path, n_tensors, n_kv):
    check(tmp_path, gguf_bytes(n_tensors=n_tensors, n_kv=n_kv), GGUFTruncatedError, "bytes left")


# --- metadata -----------------------------------------------------------------------------------


def test_key_length_bounded(tmp_path):
    data = gguf_bytes([string("k", length=HUGE) + b"rest"], n_kv=1)
    check(tmp_path, data, GGUFTruncatedError, "metadata key 0", f"needs {HUGE} bytes at offset 32", "5 left")


def test_string_value_length_bounded(tmp_path):
    data = gguf_bytes([kv("name", V.STRING, payload=string("x", length=2**63))])
    check(tmp_path, data, GGUFTruncatedError, "key 'name'", "9223372036854775808-byte string")


@pytest.mark.parametrize("etype", [V.UINT8, V.UINT64, V.STRING, V.ARRAY, V.BOOL])
def test_array_count_bounded(tmp_path, etype):
    data = gguf_bytes([kv("arr", V.ARRAY, payload=array(etype, [], count=HUGE))])
    check(tmp_path, data, GGUFTruncatedError, "key 'arr': array count 1152921504606846976 at offset")


def test_string_array_element_past_end(tmp_path):
    payload = array(V.STRING, ["ok"], count=2) + string("x", length=1000)
    check(
        tmp_path, gguf_bytes([kv("toks", V.ARRAY, payload=payload)]), GGUFTruncatedError, "'toks': string 1"
    )


def test_nesting_depth_limited(tmp_path):
    payload = struct.pack("<IQ", V.UINT8, 0)
    for _ in range(9):
        payload = struct.pack("<IQ", V.ARRAY, 1) + payload
    check(
        tmp_path, gguf_bytes([kv("deep", V.ARRAY, payload=payload)]), GGUFValueError, "nested deeper than 8"
    )


def test_nesting_at_the_limit_opens(tmp_path):
    payload = struct.pack("<IQ", V.UINT8, 1) + b"\x05"
    for _ in range(7):
        payload = struct.pack("<IQ", V.ARRAY, 1) + payload
    with open_gguf(write(tmp_path, gguf_bytes([kv("deep", V.ARRAY, payload=payload)]))) as g:
        value = g.metadata["deep"]
        for _ in range(7):
            value = value[0]
        assert value.tolist() == [5]


@pytest.mark.parametrize("vtype", [13, 255, 2**32 - 1])
def test_unknown_value_type(tmp_path, vtype):
    check(
        tmp_path,
        gguf_bytes([kv("k", vtype, payload=b"\0" * 8)]),
        GGUFValueError,
        f"unknown value type {vtype}",
    )


def test_unknown_array_element_type(tmp_path):
    data = gguf_bytes([kv("k", V.ARRAY, payload=struct.pack("<IQ", 99, 0))])
    check(tmp_path, data, GGUFValueError, "key 'k' array element", "unknown value type 99")


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        (kv(b"bad\xff", V.UINT8, 1), "metadata key 0"),
        (kv("k", V.STRING, b"\xc3\x28"), "key 'k'"),
        (kv("toks", V.ARRAY, (V.STRING, [b"ok", b"\xed\xa0\x80"])), "'toks': string 1"),
        (kv("long", V.STRING, "é".encode() * 3000 + b"\xff"), "key 'long'"),  # checked in slices
        (kv("toks", V.ARRAY, (V.STRING, [b"ok", b"x" * 5000 + b"\xc3"])), "'toks': string 1"),
    ],
)
def test_invalid_utf8(tmp_path, entry, fragment):
    check(tmp_path, gguf_bytes([entry]), GGUFValueError, fragment, "not valid UTF-8")


def test_invalid_utf8_tensor_name(tmp_path):
    data = gguf_bytes([], [tensor_info(b"\x80w", (4,), GGMLType.F32, 0)], b"\0" * 16)
    check(tmp_path, data, GGUFValueError, "tensor info 0 name", "not valid UTF-8")


def test_bool_must_be_0_or_1(tmp_path):
    check(tmp_path, gguf_bytes([kv("flag", V.BOOL, 2)]), GGUFValueError, "key 'flag': bool at offset", "is 2")
    data = gguf_bytes([kv("flags", V.ARRAY, (V.UINT8, [0, 1, 7]))]).replace(
        struct.pack("<IQ", V.UINT8, 3), struct.pack("<IQ", V.BOOL, 3)
    )
    check(tmp_path, data, GGUFValueError, "key 'flags': bool element 2")


def test_duplicate_key(tmp_path):
    data = gguf_bytes([kv("a", V.UINT8, 1), kv("a", V.UINT8, 2)])
    check(tmp_path, data, GGUFValueError, "duplicate metadata key 'a' at offset 38")


@pytest.mark.parametrize("alignment", [0, 3, 48, 1 << 17, 2**32 - 1])
def test_alignment_power_of_two_and_bounded(tmp_path, alignment):
    data = gguf_bytes([kv("general.alignment", V.UINT32, alignment)])
    check(tmp_path, data, GGUFValueError, f"'general.alignment' is {alignment}")


def test_alignment_must_be_uint32(tmp_path):
    data = gguf_bytes([kv("general.alignment", V.UINT64, 32)])
    check(tmp_path, data, GGUFValueError, "has type UINT64, expected UINT32")


def test_custom_alignment_is_used(tmp_path):
    data = gguf_bytes(
        [kv("general.alignment", V.UINT32, 64)],
        [tensor_info("w", (4,), GGMLType.F32, 0)],
        b"\x01" * 16,
        alignment=64,
    )
    with open_gguf(write(tmp_path, data)) as g:
        assert g.alignment == 64 and g.data_offset % 64 == 0 and g.tensors["w"].offset == g.data_offset


# --- tensor infos -------------------------------------------------------------------------------


@pytest.mark.parametrize("n_dims", [0, 5, 2**32 - 1])
def test_n_dims_1_to_4(tmp_path, n_dims):
    info = string("w") + struct.pack("<I", n_dims) + struct.pack("<Q", 4) * 4 + struct.pack("<IQ", 0, 0)
    check(tmp_path, gguf_bytes([], [info], b"\0" * 64), GGUFTensorError, "tensor 'w'", f"n_dims is {n_dims}")


def test_dims_at_least_1(tmp_path):
    check(tmp_path, one_tensor((4, 0), data_bytes=32), GGUFTensorError, "tensor 'w'", "dims [4, 0]")


@pytest.mark.parametrize(("number", "name"), [(99, "unknown type 99"), (4, "removed type Q4_2 (4)")])
def test_unknown_ggml_type_named(tmp_path, number, name):
    check(tmp_path, one_tensor((32,), gtype=number, data_bytes=128), UnsupportedTypeError, "tensor 'w'", name)


def test_element_count_overflow(tmp_path):
    check(tmp_path, one_tensor((2**32, 2**32), data_bytes=32), GGUFTensorError, "overflow int64")


def test_byte_size_past_end(tmp_path):
    check(
        tmp_path, one_tensor((2**40,), data_bytes=32), GGUFTruncatedError, "tensor 'w'", "runs past the end"
    )


def test_row_size_multiple_of_block(tmp_path):
    data = one_tensor((33, 2), gtype=GGMLType.Q4_0, data_bytes=64)
    check(tmp_path, data, GGUFTensorError, "row size 33", "Q4_0 block size 32")


def test_data_past_end(tmp_path):
    check(tmp_path, one_tensor((8,), data_bytes=31), GGUFTruncatedError, "tensor 'w'", "runs past the end")


def test_misaligned_offset(tmp_path):
    check(
        tmp_path, one_tensor((4,), offset=4, data_bytes=64), GGUFTensorError, "data offset 4", "alignment 32"
    )


def test_overlapping_tensors(tmp_path):
    infos = [tensor_info("a", (16,), GGMLType.F32, 0), tensor_info("b", (8,), GGMLType.F32, 32)]
    check(
        tmp_path,
        gguf_bytes([], infos, b"\0" * 64),
        GGUFTensorError,
        "'b' data at offset",
        "overlaps tensor 'a'",
    )


def test_duplicate_tensor_name(tmp_path):
    infos = [tensor_info("a", (8,), GGMLType.F32, 0), tensor_info("a", (8,), GGMLType.F32, 32)]
    check(tmp_path, gguf_bytes([], infos, b"\0" * 64), GGUFTensorError, "duplicate tensor name 'a'")


def test_data_section_past_end(tmp_path):
    info = tensor_info("w", (1,), GGMLType.F32, 0)
    data = gguf_bytes([], [info])  # 57 bytes: the data section would start at 64
    check(tmp_path, data, GGUFTruncatedError, "data section at offset 64 starts past the end")


def test_known_but_unsupported_type_opens_then_refuses_to_dequantise(tmp_path):
    data = one_tensor((256,), gtype=GGMLType.IQ2_XXS, data_bytes=66)
    with open_gguf(write(tmp_path, data)) as g:
        assert g.raw("w").size == 66
        with pytest.raises(UnsupportedTypeError, match=r"tensor 'w': cannot dequantise IQ2_XXS \(16\)"):
            g.dequantize("w")


# --- mutation fuzzing ---------------------------------------------------------------------------

VALID = small_model()
FIXED_OVERHEAD = 16 * 1024  # a GGUFFile, its dicts, an exception with its message: independent of any count
INTERESTING_U64 = [
    0,
    1,
    3,
    4,
    5,
    31,
    255,
    2**31,
    2**32 - 1,
    2**32,
    2**60,
    2**63 - 1,
    2**63,
    2**64 - 1,
    len(VALID),
]


@pytest.fixture(scope="module")
def header_len(tmp_path_factory) -> int:
    """Bytes before the tensor data of VALID: where mutations matter most."""
    with open_gguf(write(tmp_path_factory.mktemp("valid"), VALID)) as g:
        return g.data_offset


@st.composite
def mutants(draw, header_len: int) -> bytes:
    """VALID with a few bytes or u64 fields overwritten (mostly in the header), spans cut, or a tail cut."""
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 4))):
        end = header_len if draw(st.booleans()) or len(data) <= header_len else len(data)
        pos = draw(st.integers(0, max(0, end - 1)))
        kind = draw(st.sampled_from(["byte", "u64", "u32", "delete", "insert"]))
        if kind == "byte":
            data[pos : pos + 1] = bytes([draw(st.integers(0, 255))])
        elif kind == "u64":
            data[pos : pos + 8] = struct.pack("<Q", draw(st.sampled_from(INTERESTING_U64)))
        elif kind == "u32":
            data[pos : pos + 4] = struct.pack("<I", draw(st.sampled_from(INTERESTING_U64)) & 0xFFFFFFFF)
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def measured_open(path):
    """(GGUFFile or None, seconds, peak bytes allocated) for one open."""
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    try:
        g = open_gguf(path)
    except GGUFError:
        g = None
    elapsed = time.perf_counter() - start
    return g, elapsed, tracemalloc.get_traced_memory()[1] - base


def check_mutant(path, data: bytes) -> None:
    """Open fails with a GGUFError or succeeds, within 1 s, allocating at most the file's size
    (plus a fixed overhead). Measured on a second open, once lazily built caches (struct formats,
    numpy internals) exist: a claimed 2^60 count would allocate on every open."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a fresh inode: an old mapping never sees the file shrink
    g, elapsed, _ = measured_open(path)
    assert elapsed < 1.0, f"open took {elapsed:.2f} s"
    if g is not None:
        g.close()
    g, elapsed, peak = measured_open(path)
    assert elapsed < 1.0, f"open took {elapsed:.2f} s"
    assert peak <= len(data) + FIXED_OVERHEAD, f"allocated {peak} B for a {len(data)}-byte file"
    if g is None:
        return
    with g:
        for name, info in g.tensors.items():
            assert g.raw(name).size == info.nbytes
            assert info.offset >= g.data_offset and info.offset + info.nbytes <= len(data)
            try:
                assert g.dequantize(name).shape == info.shape
            except UnsupportedTypeError:
                pass


@pytest.fixture
def traced():
    tracemalloc.start()
    yield
    tracemalloc.stop()


FUZZ = settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@settings(FUZZ, max_examples=500)
@given(data=st.data())
def test_mutated_files_fail_cleanly(tmp_path, header_len, traced, data):
    check_mutant(tmp_path / "m.gguf", data.draw(mutants(header_len)))


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("ORCD_LONG_FUZZ") != "1",
    reason="20,000-example fuzz takes several minutes on 2 cores: run with ORCD_LONG_FUZZ=1",
)
@settings(FUZZ, max_examples=20_000)
@given(data=st.data())
def test_mutated_files_fail_cleanly_long(tmp_path, header_len, traced, data):
    check_mutant(tmp_path / "m.gguf", data.draw(mutants(header_len)))
