"""`orcd inspect`: JSON and text reports, catalogue names, one-line errors with a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys

from gguf_loader.synthetic import BYTE_VOCAB, write_synthetic_model
from worker.cli import main


def test_json_report_for_qwen(qwen_path, capsys):
    assert main(["inspect", str(qwen_path), "--json", "--ctx", "4096", "--batch", "4"]) == 0
    info = json.loads(capsys.readouterr().out)
    c = info["config"]
    assert info["architecture"] == "qwen2" and info["file_size"] == 491_400_064
    assert (c["n_layers"], c["dim"], c["n_heads"], c["n_kv_heads"], c["hidden_dim"], c["vocab_size"]) == (
        24, 896, 14, 2, 4864, 151936)
    assert c["qkv_bias"] and not c["tied_embeddings"] and c["rope"] == "neox"
    assert info["tokenizer"] == {"model": "gpt2", "pre": "qwen2", "n_tokens": 151936, "bos_id": 151643,
                                 "eos_id": 151645, "chat_template": True}
    assert info["n_params"] == 630_167_424 and info["n_tensors"] == 291
    assert info["tensor_types"]["Q6_K"]["count"] == 12
    mem = info["memory"]
    assert (mem["compute_dtype"], mem["ctx"], mem["batch"]) == ("f16", 4096, 4)
    assert mem["kv_bytes"] == 2 * 24 * 128 * 2 * 4096 * 4
    assert mem["total_bytes"] == mem["weight_bytes"] + mem["kv_bytes"] + mem["workspace_bytes"]


def test_text_report_for_catalogue_name(capsys):
    assert main(["inspect", "smollm2-135m-instruct", "--dtype", "f32", "--ctx", "1024"]) == 0
    out = capsys.readouterr().out
    assert "architecture  llama: 30 layers, dim 576, hidden 1536, heads 9/3 kv, head_dim 64" in out
    assert "features      tied embeddings" in out
    assert "tokenizer     gpt2 (pre smollm), 49152 tokens, bos 1, eos 2, chat template" in out
    assert "parameters    134,515,008" in out
    assert "memory        f32, ctx 1024, batch 1: weights 513.1 MiB" in out


def test_phi3_long_rope_in_json(tmp_path, capsys):
    path = write_synthetic_model(tmp_path / "p.gguf", "phi3", vocab=BYTE_VOCAB, context_length=4096,
                                 original_context_length=1024)
    assert main(["inspect", str(path), "--json"]) == 0
    scaling = json.loads(capsys.readouterr().out)["config"]["rope_scaling"]
    assert scaling["original_context_length"] == 1024 and len(scaling["long_factors"]) == 8


def test_bad_files_give_one_line_and_exit_2(tmp_path, capsys):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\xff" * 60)
    assert main(["inspect", str(junk)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("orcd inspect: ") and err.count("\n") == 1
    assert main(["inspect", str(tmp_path / "missing.gguf")]) == 2
    assert "neither a file nor a catalogue name" in capsys.readouterr().err


def test_unsupported_architecture_in_a_subprocess(tmp_path):
    import gguf

    path = tmp_path / "mamba.gguf"
    writer = gguf.GGUFWriter(path, "mamba")
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    proc = subprocess.run([sys.executable, "-m", "worker.cli", "inspect", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"orcd inspect: {path}: unsupported architecture 'mamba'; "
                           "supported: llama, qwen2, phi3, gpt2\n")
