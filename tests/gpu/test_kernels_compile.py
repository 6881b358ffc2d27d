"""Every kernel compiles for Hopper with the machine's nvcc (CI, no GPU needed; skipped only without nvcc).

Each file is built in every -D variant the launchers use (`gpu.kernel_cache.VARIANTS`), for f16 and bf16
operands, and the compiler's resource report must show no spilling to local memory.
"""

from __future__ import annotations

import re

import pytest

from gpu import kernel_cache

NVCC = kernel_cache.nvcc()


def _cases():
    for name, defines, dtype in kernel_cache.all_variants():
        label = ",".join(f"{k}={v}" for k, v in defines.items()) or "default"
        yield pytest.param(name, defines, dtype, id=f"{name}-{label}-{dtype}")


def test_every_kernel_file_has_one_global_named_after_it():
    files = sorted(kernel_cache.KERNEL_DIR.glob("*.cu"))
    assert len(files) >= 10
    for path in files:
        pattern = r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)"
        assert re.findall(pattern, path.read_text()) == [path.stem], path.name


def test_cubin_names_follow_source_defines_and_dtype():
    a = kernel_cache.cubin_name("gemv", {"MAX_M": 1}, "f16", "sm_90")
    assert a == kernel_cache.cubin_name("gemv", {"MAX_M": 1}, "f16", "sm_90")
    others = {kernel_cache.cubin_name("gemv", {"MAX_M": 2}, "f16", "sm_90"),
              kernel_cache.cubin_name("gemv", {"MAX_M": 1}, "bf16", "sm_90"),
              kernel_cache.cubin_name("gemv", {"MAX_M": 1}, "f16", "sm_80"),
              kernel_cache.cubin_name("gemm", {"MAX_M": 1}, "f16", "sm_90")}
    assert a not in others and len(others) == 4


def test_cubin_names_follow_the_shared_headers(tmp_path, monkeypatch):
    for name in ("sample.cu", "common.cuh", "sample_keys.cuh"):
        (tmp_path / name).write_bytes((kernel_cache.KERNEL_DIR / name).read_bytes())
    monkeypatch.setattr(kernel_cache, "KERNEL_DIR", tmp_path)
    before = kernel_cache.cubin_name("sample", {}, "f16", "sm_90")
    with (tmp_path / "sample_keys.cuh").open("a") as header:
        header.write("// edited\n")
    assert kernel_cache.cubin_name("sample", {}, "f16", "sm_90") != before  # a stale cubin is not loaded


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed on this machine")
@pytest.mark.parametrize(("name", "defines", "dtype"), list(_cases()))
def test_kernel_compiles_for_sm90(name, defines, dtype, tmp_path):
    result = kernel_cache.build(name, defines, dtype, "sm_90", tmp_path, extra=("-Xptxas", "-v"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / kernel_cache.cubin_name(name, defines, dtype, "sm_90")).stat().st_size > 0
    spills = re.findall(r"(\d+) bytes spill stores", result.stderr)
    assert spills and all(s == "0" for s in spills), result.stderr
