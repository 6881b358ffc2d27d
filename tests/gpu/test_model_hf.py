"""The numpy engine against HF transformers (torch CPU, float32) on the same synthetic GGUF files.

Each architecture: a random-weight model in llama.cpp's layout with its real vocab; our prefill and
16 greedy decode steps (KV cache) are compared with one HF forward over the same token sequence,
whose logits at each position are what HF's own incremental decode would see.
"""

from __future__ import annotations

import numpy as np
import pytest

from gguf_loader.synthetic import write_synthetic_model
from gpu.engine import load_engine

pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

RTOL = 1e-4  # max |ours - HF| / max |HF| per row; both are float32, observed ~1e-6
DECODE_STEPS = 16
PROMPT_LEN = 9

# GQA on the llama family (2 KV heads for 4 query heads); qwen2 with tied embeddings; gpt2 plain MHA.
CASES = {
    "llama": dict(n_heads=4, n_kv_heads=2),
    "qwen2": dict(n_heads=4, n_kv_heads=2, tied=True),
    "phi3": dict(n_heads=4, n_kv_heads=2),
    "gpt2": dict(n_heads=4),
}


def rel_err(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    """(arch, engine, HF model) for one synthetic model file."""
    arch = request.param
    directory = tmp_path_factory.mktemp(f"hf-{arch}")
    path = write_synthetic_model(
        directory / f"{arch}.gguf", arch, dim=64, n_layers=2, scale=0.1, **CASES[arch]
    )
    engine = load_engine(path, backend="numpy", max_batch=2, max_context=64)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=path.name, dtype=torch.float32
    )
    return arch, engine, hf.eval()


def hf_logits(hf, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0].numpy()  # [T, vocab]


def test_prefill_and_decode_match_hf(case):
    arch, engine, hf = case
    assert engine.config.arch == arch
    prompt = np.random.default_rng(7).integers(0, engine.config.vocab_size, PROMPT_LEN).tolist()
    slot = engine.alloc()
    ours = [engine.prefill([slot], [prompt])[0]]
    seq = list(prompt)
    for _ in range(DECODE_STEPS):
        seq.append(int(np.argmax(ours[-1])))
        ours.append(engine.decode([slot], [seq[-1]])[0])
    engine.free(slot)

    theirs = hf_logits(hf, seq)[PROMPT_LEN - 1 :]  # [1 + DECODE_STEPS, vocab]
    errors = [rel_err(o, t) for o, t in zip(ours, theirs, strict=True)]
    assert max(errors) <= RTOL, f"{arch}: relative errors per step {np.round(errors, 8).tolist()}"
    assert [int(np.argmax(t)) for t in theirs[:-1]] == seq[PROMPT_LEN:]  # HF's greedy picks the same tokens

    slot = engine.alloc()
    every = engine.prefill_all_logits(slot, seq)  # teacher-forced, all positions at once
    engine.free(slot)
    assert every.shape == (len(seq), engine.config.vocab_size)
    assert rel_err(every, hf_logits(hf, seq)) <= RTOL
