"""`orcd tokenize` / `orcd detokenize` through the CLI entry point."""

from __future__ import annotations

import io
import json

import pytest

from worker.cli import main


def test_tokenize_default_model(smollm2_path, capsys):
    assert main(["tokenize", "Hello, world! 123"]) == 0
    assert json.loads(capsys.readouterr().out) == [19556, 28, 905, 17, 216, 33, 34, 35]


def test_tokenize_flags(qwen_path, capsys):
    text = "<|im_start|>user"
    assert main(["tokenize", "--model", str(qwen_path), "--special", text]) == 0
    assert json.loads(capsys.readouterr().out) == [151644, 872]
    assert main(["tokenize", "-m", str(qwen_path), text]) == 0
    assert 151644 not in json.loads(capsys.readouterr().out)


def test_bos_and_no_bos(vocab_dir, capsys):
    spm = str(vocab_dir / "ggml-vocab-llama-spm.gguf")
    assert main(["tokenize", "-m", spm, "Hello"]) == 0
    assert json.loads(capsys.readouterr().out) == [1, 15043]
    assert main(["tokenize", "-m", spm, "--no-bos", "Hello"]) == 0
    assert json.loads(capsys.readouterr().out) == [15043]


def test_stdin_round_trip(vocab_dir, capsys, monkeypatch):
    model = str(vocab_dir / "ggml-vocab-qwen2.gguf")
    text = "naïve café\n  日本語 🚀\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    assert main(["tokenize", "-m", model, "-"]) == 0
    ids = capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO(ids))
    assert main(["detokenize", "-m", model, "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out) == text


def test_detokenize_arguments(vocab_dir, capsys):
    model = str(vocab_dir / "ggml-vocab-qwen2.gguf")
    assert main(["detokenize", "-m", model, "9707", "1879"]) == 0
    assert capsys.readouterr().out == "Hello world\n"
    assert main(["detokenize", "-m", model, "--skip-special", "[151643, 9707]"]) == 0
    assert capsys.readouterr().out == "Hello\n"


@pytest.mark.parametrize("args, words", [(["12", "x"], "must be integers"), (["99999999"], "99999999")])
def test_detokenize_errors(vocab_dir, capsys, args, words):
    model = str(vocab_dir / "ggml-vocab-qwen2.gguf")
    assert main(["detokenize", "-m", model, *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and words in captured.err and "Traceback" not in captured.err


def test_unknown_model_is_one_line_error(capsys):
    assert main(["tokenize", "-m", "/no/such/model.gguf", "x"]) == 2
    assert "neither a file nor a catalogue name" in capsys.readouterr().err
