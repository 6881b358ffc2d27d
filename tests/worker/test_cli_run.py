"""`orcd run`: stdout carries only the text (or JSON lines), timings go to stderr; flags validated."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from gguf_loader import assets
from gpu.runner import encode_prompt
from tests.gpu.generation_fakes import BOS, EOS, ByteTokenizer, FakeEngine, scripted_logits
from worker.cli import main
from worker.commands import run as run_command

SCRIPT = list(b"Paris!") + [EOS]


@pytest.fixture
def fake_model(monkeypatch):
    """`orcd run` over the byte tokenizer and a scripted engine; records what the engine was asked."""
    tok = ByteTokenizer()
    seen: dict = {}

    def open_engine(path, backend, max_context):
        seen.update(path=path, backend=backend, max_context=max_context)
        engine = FakeEngine(lambda tokens: seen["model"](tokens), max_batch=1, max_context=max_context)
        seen["engine"] = engine
        return engine

    def open_tokenizer(path):
        return tok

    real_prefill = FakeEngine.prefill

    def prefill(self, slots, prompts):
        seen["prompt"] = list(prompts[0])
        seen["model"] = scripted_logits(tok.vocab_size, SCRIPT, len(prompts[0]))
        return real_prefill(self, slots, prompts)

    monkeypatch.setattr(FakeEngine, "prefill", prefill)
    monkeypatch.setattr(run_command, "open_engine", open_engine)
    monkeypatch.setattr(run_command, "open_tokenizer", open_tokenizer)
    monkeypatch.setattr(assets, "resolve_model", lambda name: f"/models/{name or 'default'}.gguf")
    return seen


def test_text_mode_streams_only_the_text(fake_model, capsys):
    assert main(["run", "hi", "--temperature", "0", "--backend", "numpy"]) == 0
    out, err = capsys.readouterr()
    assert out == "Paris!"
    assert "orcd run: 3 prompt tokens, prefill " in err and "7 generated, decode " in err
    assert "tok/s; TTFT " in err and "finish stop" in err
    assert fake_model["path"] == "/models/default.gguf" and fake_model["backend"] == "numpy"
    assert fake_model["prompt"] == [BOS, ord("h"), ord("i")]
    assert fake_model["max_context"] == 3 + 256 and fake_model["engine"].tokens == {}


def test_json_mode_lines_and_summary(fake_model, capsys):
    assert main(["run", "hi", "--json", "--logprobs", "2", "--temperature", "0", "--seed", "5",
                 "--model", "x"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(d["token_id"], d["text"]) for d in lines[:-1]] == [(t, chr(t)) for t in b"Paris!"] + [(EOS, "")]
    for d in lines[:-1]:
        assert len(d["top_logprobs"]) == 2 and d["top_logprobs"][0]["id"] == d["token_id"]
    assert lines[0]["logprob"] == pytest.approx(10 - np.log(np.exp(10) + ByteTokenizer().vocab_size - 1))
    summary = lines[-1]
    assert summary["finish_reason"] == "stop" and summary["seed"] == 5 and summary["error"] is None
    assert summary["usage"] == {"prompt_tokens": 3, "completion_tokens": 7}
    assert set(summary["timings"]) == {"prefill_s", "decode_s", "ttft_s", "prefill_tok_s", "decode_tok_s"}
    assert fake_model["path"] == "/models/x.gguf"


def test_max_tokens_stop_and_stdin(fake_model, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin"))
    assert main(["run", "-", "--temperature", "0", "--max-tokens", "3"]) == 0
    out, err = capsys.readouterr()
    assert out == "Par" and "finish length" in err
    assert fake_model["prompt"] == [BOS] + list(b"from stdin") and fake_model["max_context"] == 11 + 3
    assert main(["run", "q", "--temperature", "0", "--stop", "is", "--stop", "ri"]) == 0
    assert capsys.readouterr().out == "Pa"


def test_chat_renders_the_template(fake_model, capsys):
    assert main(["run", "hi", "--chat", "--system", "be brief", "--temperature", "0"]) == 0
    assert fake_model["prompt"] == encode_prompt(ByteTokenizer(), "hi", chat=True, system="be brief")
    assert capsys.readouterr().out == "Paris!"


@pytest.mark.parametrize("command", ["run", "generate"])
def test_an_empty_prompt_is_one_error_line(command, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main([command, "-"]) == 2
    assert capsys.readouterr().err == f"orcd {command}: empty prompt\n"


def test_a_prompt_filling_the_context_is_one_error_line(fake_model, capsys):
    assert main(["run", "hi", "--ctx-size", "3"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "orcd run: prompt of 3 tokens leaves no room in a context of 3\n"


@pytest.mark.parametrize(("flag", "value"), [("--temperature", "-1"), ("--top-p", "0"), ("--logprobs", "21"),
                                             ("--repeat-penalty", "nan"), ("--max-tokens", "0")])
def test_invalid_flags_exit_2_naming_the_flag(fake_model, capsys, flag, value):
    with pytest.raises(SystemExit) as info:
        main(["run", "hi", flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"orcd: invalid {flag} ") and len(err.splitlines()) == 1


def _greedy_loop(path, prompt: str, n: int) -> str:
    """The engine's plain greedy loop (argmax, stop at EOG), independent of gpu.runner."""
    from gpu.engine import load_engine
    from tokenizer import load_tokenizer

    tok = load_tokenizer(path)
    engine = load_engine(path, backend="numpy", max_batch=1, max_context=64)
    slot = engine.alloc()
    logits = engine.prefill([slot], [tok.encode(prompt)])  # [1, vocab]
    out: list[int] = []
    while len(out) < n:
        token = int(np.argmax(logits[0]))
        if tok.is_eog(token):
            break
        out.append(token)
        logits = engine.decode([slot], [token])
    return tok.decode(out)


@pytest.mark.slow
def test_orcd_run_on_smollm2_equals_the_greedy_loop(smollm2_path, capsys):
    prompt = "The capital of France is"
    expected = _greedy_loop(smollm2_path, prompt, 8)
    assert main(["run", prompt, "--temperature", "0", "--max-tokens", "8", "--backend", "numpy"]) == 0
    out, err = capsys.readouterr()
    assert out == expected and out.startswith(" Paris")
    assert "orcd run: 5 prompt tokens, prefill " in err and "8 generated, decode " in err
    assert "finish length" in err and "backend numpy" in err
