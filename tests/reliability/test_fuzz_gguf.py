"""CI-sized GGUF fuzzing (bench/fuzz_gguf.py runs 100,000+): 60 structure-aware hostile files per seed
through open_gguf, ModelConfig, load_tokenizer and load_weights; every failure must be the stage's own
error class, every stage under a second, and open_gguf's peak RSS growth under the file size + 16 MiB.
"""

from __future__ import annotations

import logging

import pytest

from gguf_loader.synthetic import write_synthetic_model
from tests.reliability.gguf_harness import run_case
from tests.reliability.gguf_mutator import build_case, seed_from_gguf

CASES_PER_SEED = 60


@pytest.fixture(scope="module")
def seeds(smollm2_path, qwen_path, vocab_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("fuzz-seeds")
    out = [seed_from_gguf(smollm2_path), seed_from_gguf(qwen_path)]
    out += [seed_from_gguf(vocab_dir / f"ggml-vocab-{n}.gguf") for n in ("gpt-2", "llama-spm", "phi-3")]
    for arch, dtype in (("llama", "q8_0"), ("qwen2", "f16"), ("phi3", "f16"), ("gpt2", "f16")):
        path = write_synthetic_model(work / f"{arch}.gguf", arch, vocab="bytes", dim=32, n_layers=1,
                                     n_heads=2, dtype=dtype, vocab_size=300,
                                     context_length=256 if arch == "gpt2" else 512,
                                     original_context_length=128 if arch == "phi3" else None)
        out.append(seed_from_gguf(path, max_array=1024))
    return out


def test_seeds_are_faithful_re_serialisations(seeds, tmp_path):
    """Case 0 without edits would be the seed itself: check the seed opens and matches its source."""
    from gguf_loader.reader import open_gguf
    from tests.reliability.gguf_mutator import Case

    seed = seeds[-4]  # synthetic llama, real data kept
    Case(seed.name, -1, seed.header, seed.size, seed.data, ()).write(tmp_path / "same.gguf")
    with open_gguf(tmp_path / "same.gguf") as gguf:
        assert [(t.name, t.dims, int(t.ggml_type)) for t in gguf.tensors.values()] == [
            (name, dims, ggml_type) for name, dims, ggml_type, _ in seed.tensors]
        assert gguf.metadata["general.architecture"] == "llama"


def test_hostile_gguf_files_fail_cleanly(seeds, tmp_path):
    logging.disable(logging.WARNING)
    try:
        outcomes = [run_case(build_case(seed, n), tmp_path, alarm_s=5.0)
                    for seed in seeds for n in range(CASES_PER_SEED)]
    finally:
        logging.disable(logging.NOTSET)
    crashes = [(o.seed, o.number, o.crashes) for o in outcomes if o.crashes]
    hangs = [(o.seed, o.number, o.seconds) for o in outcomes if o.hang]
    bloated = [(o.seed, o.number, o.open_rss_growth) for o in outcomes
               if o.open_rss_growth > o.size + (16 << 20)]
    assert crashes == [] and hangs == [] and bloated == []
    opened = sum(o.results["open"] == "ok" for o in outcomes)
    assert 0.1 * len(outcomes) < opened < 0.9 * len(outcomes)  # the mix reaches past the reader both ways
    assert any(o.results.get("weights") == "ok" for o in outcomes)
