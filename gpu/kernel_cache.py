"""Ahead-of-time kernel builds: cubins named by a hash of the kernel's source and the shared headers, its
-D defines, the operand type and the arch, so `Runtime` loads them instead of compiling (nvcc takes seconds
per variant, device time is scarce). No PyCUDA here: cubins are built with nvcc on any machine with the
same toolkit.

    python3 -m gpu.kernel_cache --out DIR [--arch sm_90]    # every variant the launchers use
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

KERNEL_DIR = Path(__file__).parent / "kernels"
ENV_DIR = "ORCD_CUBIN_DIR"

# the -D variants the launchers in gpu/ops ask for (head dims of the supported models)
VARIANTS: dict[str, list[dict[str, int]]] = {
    # per row bucket and epilogue: operand weights with and without the software pipeline, Q8_0 weights,
    # and both with their first weights loaded before the programmatic wait
    "gemv": [{"MAX_M": m, "EPI_SWIGLU": int(e == "swiglu"), "EPI_ROPE": int(e == "rope"), "LOAD": 2, **kind}
             for m in (8, 16, 32, 64) for e in ("none", "swiglu", "rope")
             for kind in ({"PIPE": 0}, {"PIPE": 1}, {"PIPE": 0, "WQ8": 1}, {"PIPE": 0, "PRELOAD": 1},
                          {"PIPE": 0, "PRELOAD": 1, "WQ8": 1})],
    "embedding": [{}, {"TABLE_Q8": 1}],
    # gpu/ops/gemm.py CONFIGS: BM x BN tiles, WM x WN warps, BK, STAGES (named BMxBNxBKsSTAGESwWMWN there)
    "gemm": [dict(zip(("BM", "BN", "WM", "WN", "BK", "STAGES"), c, strict=True))
             for c in ((128, 256, 2, 4, 64, 3), (128, 128, 2, 4, 64, 3), (128, 64, 2, 2, 64, 4),
                       (64, 64, 2, 2, 64, 4), (32, 64, 2, 2, 32, 4), (128, 128, 2, 2, 64, 3))],
    "attention_decode": [{"HEAD_DIM": d} for d in (64, 96, 128)]
    + [{"HEAD_DIM": d, "DIRECT": 1, "WARPS": w} for d in (64, 96, 128) for w in (4, 16)],
    "attention_prefill": [{"HEAD_DIM": d} for d in (64, 96, 128)],
}


def nvcc() -> str | None:
    found = shutil.which("nvcc")
    return found or next((p for p in ("/usr/local/cuda/bin/nvcc",) if Path(p).exists()), None)


def options(defines: dict[str, int], dtype: str) -> list[str]:
    opts = [f"-D{k}={v}" for k, v in sorted(defines.items())]
    return [*opts, "-DUSE_BF16"] if dtype == "bf16" else opts


def cubin_name(name: str, defines: dict[str, int], dtype: str, arch: str) -> str:
    digest = hashlib.sha256()
    for part in (KERNEL_DIR / f"{name}.cu", *sorted(KERNEL_DIR.glob("*.cuh"))):  # the headers it may include
        digest.update(part.read_bytes())
    digest.update(" ".join([arch, *options(defines, dtype)]).encode())
    return f"{name}-{digest.hexdigest()[:16]}.cubin"


def cached(name: str, defines: dict[str, int], dtype: str, arch: str) -> Path | None:
    """The prebuilt cubin in $ORCD_CUBIN_DIR for this variant, if there is one."""
    root = os.environ.get(ENV_DIR)
    if not root:
        return None
    path = Path(root) / cubin_name(name, defines, dtype, arch)
    return path if path.exists() else None


def build(name: str, defines: dict[str, int], dtype: str, arch: str, out_dir: Path,
          extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """nvcc -cubin one variant into out_dir (under its cache name); returns the finished process."""
    compiler = nvcc()
    if compiler is None:
        raise FileNotFoundError("nvcc not found (PATH or /usr/local/cuda/bin)")
    out = out_dir / cubin_name(name, defines, dtype, arch)
    cmd = [compiler, f"-arch={arch}", "-cubin", f"-I{KERNEL_DIR}", *options(defines, dtype), *extra, "-o",
           str(out), str(KERNEL_DIR / f"{name}.cu")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def all_variants():
    for path in sorted(KERNEL_DIR.glob("*.cu")):
        for defines in VARIANTS.get(path.stem, [{}]):
            for dtype in ("f16", "bf16"):
                yield path.stem, defines, dtype


def main() -> None:
    parser = argparse.ArgumentParser(description="prebuild every kernel variant as cubins")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--arch", default="sm_90")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = list(all_variants())
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        results = list(pool.map(lambda j: build(*j, args.arch, args.out), jobs))
    failed = [(j, r.stderr) for j, r in zip(jobs, results, strict=True) if r.returncode]
    for job, err in failed:
        print(f"FAILED {job}: {err}")
    print(f"{len(jobs) - len(failed)}/{len(jobs)} cubins in {args.out}")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
