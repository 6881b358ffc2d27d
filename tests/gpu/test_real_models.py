"""The numpy engine on the real SmolLM2 and Qwen coder files, against HF transformers on the same GGUF.

For each model the three prompts run as one ragged batch (prefill together, decode together) for 32
greedy tokens; the first prompt also runs alone for 8 steps and must give bit-identical logits. HF's greedy
continuation is checked by teacher forcing: one HF forward over prompt + our 32 tokens, whose argmax
at each position is what HF's own greedy loop would pick next.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpu.engine import load_engine
from tokenizer import load_tokenizer

pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, there was a"]
N_NEW = 32
N_SOLO = 8  # steps of the solo run compared bit for bit with the batched one
RTOL = 1e-4  # both run float32 over the same dequantised weights; observed ~2e-6


def greedy(engine, prompts: list[list[int]], n_new: int = N_NEW) -> tuple[list[list[int]], list[np.ndarray]]:
    """n_new greedy tokens per prompt, all prompts in one batch; returns tokens and logits [n_new, vocab]."""
    slots = [engine.alloc() for _ in prompts]
    logits = [engine.prefill(slots, prompts)]  # [B, vocab]
    tokens = [np.argmax(logits[-1], axis=-1)]  # [B]
    for _ in range(n_new - 1):
        logits.append(engine.decode(slots, tokens[-1].tolist()))
        tokens.append(np.argmax(logits[-1], axis=-1))
    for slot in slots:
        engine.free(slot)
    per_prompt = np.stack(tokens, axis=1).tolist()  # [B, N_NEW]
    return per_prompt, list(np.stack(logits, axis=1))  # B x [N_NEW, vocab]


@pytest.fixture(scope="module", params=["smollm2", "qwen"])
def run(request):
    """Everything computed once per model: prompts, our batched and solo runs, HF's logits."""
    path = request.getfixturevalue(f"{request.param}_path")
    tok = load_tokenizer(path)
    engine = load_engine(path, backend="numpy", max_batch=len(PROMPTS), max_context=128)
    prompts = [tok.encode(p) for p in PROMPTS]
    tokens, logits = greedy(engine, prompts)
    solo_tokens, solo_logits = greedy(engine, prompts[:1], N_SOLO)
    engine.close()

    hf = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    with torch.no_grad():
        hf_logits = [
            hf(torch.tensor([p + t[:-1]])).logits[0, len(p) - 1 :].numpy()  # [N_NEW, vocab]
            for p, t in zip(prompts, tokens, strict=True)
        ]
    del hf
    return dict(
        tok=tok,
        prompts=prompts,
        tokens=tokens,
        logits=logits,
        solo_tokens=solo_tokens,
        solo_logits=solo_logits,
        hf_logits=hf_logits,
    )


def test_paris_is_the_top_token(run):
    first = run["logits"][0][0]  # prompt 0, first generated position
    assert run["tok"].decode([int(np.argmax(first))]) == " Paris"


def test_batched_run_is_bit_identical_to_solo(run):
    assert run["solo_tokens"][0] == run["tokens"][0][:N_SOLO]
    np.testing.assert_array_equal(run["solo_logits"][0], run["logits"][0][:N_SOLO])


@pytest.mark.parametrize("index", range(len(PROMPTS)))
def test_greedy_continuation_matches_hf(run, index):
    ours, theirs = run["tokens"][index], run["hf_logits"][index]
    hf_greedy = np.argmax(theirs, axis=-1).tolist()
    assert hf_greedy == ours, f"prompt {PROMPTS[index]!r}: HF {hf_greedy} vs ours {ours}"
    err = np.max(np.abs(run["logits"][index] - theirs)) / np.max(np.abs(theirs))
    assert err <= RTOL, f"prompt {PROMPTS[index]!r}: relative logit error {err:.3g}"
