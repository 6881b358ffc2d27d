"""Encode throughput of the qwen2 byte-level BPE tokenizer, next to Hugging Face `tokenizers`.

    python bench/tokenizer_bench.py [--vocab PATH] [--mb 1.2] [--repeat 3] [--no-hf]

The corpus (deterministic, built from what every Python install and the vocabulary carry):
English = docstrings of the standard library, code = standard-library source, CJK = sentences of
CJK words drawn from the vocabulary itself. Mixed = 50% / 30% / 20% of the bytes. Each figure is the
best of --repeat runs, in MB of UTF-8 per second of this process's CPU time (so one core, however
busy the host); "cold" clears the word cache before each run. HF's tokenizer is
transformers' conversion of the same GGUF vocabulary (single call, no batching, so one thread).
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import sys
import sysconfig
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")


def english(n_bytes: int) -> str:
    docs, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc:
                    docs.append(doc)
                    size += len(doc.encode())
        if size >= n_bytes:
            break
    return _cut("\n\n".join(docs), n_bytes)


def code(n_bytes: int) -> str:
    parts, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text.encode())
        if size >= n_bytes:
            break
    return _cut("".join(parts), n_bytes)


def cjk(n_bytes: int, tok) -> str:
    def is_cjk(text: str) -> bool:
        return len(text) >= 2 and all("\u4e00" <= c <= "\u9fff" or "\u3040" <= c <= "\u30ff" for c in text)

    words = sorted({w for w in (tok.decode([i]) for i in range(tok.vocab_size)) if is_cjk(w)})
    rng = random.Random(0)
    out, size = [], 0
    while size < n_bytes:
        sentence = "".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + rng.choice("，。！？")
        out.append(sentence)
        size += len(sentence.encode())
    return _cut("".join(out), n_bytes)


def _cut(text: str, n_bytes: int) -> str:
    return text.encode()[:n_bytes].decode("utf-8", errors="ignore")


def best_rate(encode, text: str, repeat: int, before=lambda: None) -> tuple[float, list[int]]:
    best, ids = float("inf"), []
    for _ in range(repeat):
        before()
        start = time.process_time()  # CPU time of this process: one core, whatever else the host runs
        ids = encode(text)
        best = min(best, time.process_time() - start)
    return len(text.encode()) / best / 1e6, ids


def main() -> int:
    from gguf_loader.assets import fetch_vocab_tests
    from tokenizer import load_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=Path, default=None, help="GGUF (default: qwen2 vocab)")
    parser.add_argument("--mb", type=float, default=1.2, help="size of the mixed corpus in MB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-hf", action="store_true", help="skip the Hugging Face comparison")
    args = parser.parse_args()

    vocab = args.vocab or fetch_vocab_tests() / "ggml-vocab-qwen2.gguf"
    tok = load_tokenizer(vocab)
    total = int(args.mb * 1e6)
    parts = {"english": english(total // 2), "code": code(total * 3 // 10), "cjk": cjk(total // 5, tok)}
    parts["mixed"] = parts["english"] + parts["code"] + parts["cjk"]

    hf = None
    if not args.no_hf:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(vocab.parent), gguf_file=vocab.name).backend_tokenizer

    def ours(text: str) -> list[int]:
        return tok.encode(text, add_special=False)

    print(f"vocab {vocab.name} ({tok.vocab_size} tokens, pre {tok.vocab.pre}), best of {args.repeat}")
    print("MB/s of CPU time; ours/hf compares cold with hf")
    print(f"{'corpus':8} {'MB':>5} {'cold':>7} {'warm':>7} {'hf':>7} {'ours/hf':>8}  ids equal")
    for name, text in parts.items():
        cold, ids = best_rate(ours, text, args.repeat, before=tok._cache.clear)
        warm, _ = best_rate(ours, text, args.repeat)
        line = f"{name:8} {len(text.encode()) / 1e6:5.2f} {cold:7.2f} {warm:7.2f}"
        if hf is not None:
            rate, hf_ids = best_rate(lambda t: hf.encode(t, add_special_tokens=False).ids, text, args.repeat)
            line += f" {rate:7.2f} {cold / rate:8.3f}  {ids == hf_ids}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
