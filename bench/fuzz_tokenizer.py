"""Tokenizer and chat-template fuzzing figures (tests/reliability/text_fuzz.py).

Usage: python bench/fuzz_tokenizer.py [--texts 10000] [--id-seqs 3000] [--procs 2] [--template-timeout 30]

For the five llama.cpp vocabs, SmolLM2 and Qwen2.5-coder: `--texts` random hostile texts each
(encode with and without special parsing, decode, stream decode, round trip) and `--id-seqs` random
id sequences (decode == stream decode, skip_special both ways; out-of-range ids must be
`TokenIdError`). Then every hostile chat template, each in its own process under a time limit:
outcome (TemplateError / rendered / killed), wall time, peak RSS and output length; more than 3 s,
512 MiB or 4 Mi characters counts as unbounded. Round trips are checked where they must hold (not for
a SentencePiece vocab's own U+2581, nor bytes a byte-level vocab has no token for: see the header).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import resource
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from tests.reliability.text_fuzz import (  # noqa: E402
    HOSTILE_TEMPLATES,
    TEMPLATE_OUTPUT_BOUND,
    check_ids,
    check_text,
    missing_bytes,
    random_text,
    specials_of,
)

_TOK = None


def sources() -> dict[str, Path]:
    from gguf_loader import assets

    vocab_dir = assets.fetch_vocab_tests()
    out = {name: vocab_dir / f"ggml-vocab-{name}.gguf" for name in assets.VOCAB_NAMES}
    out["smollm2"] = assets.fetch("smollm2-135m-instruct")
    out["qwen2.5-coder"] = assets.fetch("qwen2.5-coder-0.5b-instruct-q4km")
    return out


def _load(path: str) -> None:
    global _TOK
    import logging

    from tokenizer import load_tokenizer

    logging.disable(logging.WARNING)
    _TOK = load_tokenizer(path)


def _texts(task: tuple[str, int, int]) -> tuple[Counter, list[str], float, int]:
    name, first, count = task
    specials = specials_of(_TOK)
    missing = missing_bytes(_TOK)
    problems: Counter = Counter()
    examples: list[str] = []
    slowest, chars = 0.0, 0
    for n in range(first, first + count):
        text = random_text(random.Random(f"{name}:{n}"), specials)
        started = time.perf_counter()
        found = check_text(_TOK, text, missing)
        elapsed = time.perf_counter() - started
        if elapsed > slowest:
            slowest, chars = elapsed, len(text)
        for p in found:
            if problems[p] == 0:
                examples.append(f"{p}: {name}:{n} {text[:60]!r}")
            problems[p] += 1
    return problems, examples, slowest, chars


def _ids(task: tuple[str, int, int]) -> tuple[Counter, list[str]]:
    from tokenizer.errors import TokenIdError

    name, first, count = task
    problems: Counter = Counter()
    examples: list[str] = []
    n_vocab = _TOK.vocab_size
    for n in range(first, first + count):
        rng = random.Random(f"ids:{name}:{n}")
        ids = [rng.randrange(n_vocab) for _ in range(rng.randint(0, 64))]
        for p in check_ids(_TOK, ids):
            problems[p] += 1
            examples.append(f"{p}: ids {ids[:12]}")
        bad = rng.choice((-1, n_vocab, n_vocab + 7, 2**31, -(2**40)))
        try:
            _TOK.decode(ids + [bad])
            problems["out-of-range id decoded"] += 1
        except TokenIdError:
            pass
        except Exception as exc:
            problems[f"out-of-range id crash {type(exc).__name__}"] += 1
    return problems, examples


def _template_child(source: str, queue: mp.Queue) -> None:
    from tokenizer.chat import ChatTemplate
    from tokenizer.errors import TemplateError

    started = time.perf_counter()
    try:
        out = ChatTemplate(source, "<s>", "</s>").render([{"role": "user", "content": "hi"}])
        outcome, size = "rendered", len(out)
    except TemplateError as exc:
        outcome, size = f"TemplateError: {str(exc)[:70]}", 0
    except BaseException as exc:  # noqa: BLE001 (a crash is the finding)
        outcome, size = f"CRASH {type(exc).__name__}: {str(exc)[:70]}", 0
    queue.put((outcome, size, time.perf_counter() - started,
               resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def templates(timeout_s: float) -> int:
    print(f"\nhostile chat templates ({len(HOSTILE_TEMPLATES)}), each in a fresh process, "
          f"killed after {timeout_s:g} s:")
    bad = 0
    ctx = mp.get_context("spawn")
    for name, source in HOSTILE_TEMPLATES:
        queue = ctx.Queue()
        proc = ctx.Process(target=_template_child, args=(source, queue))
        started = time.perf_counter()
        proc.start()
        proc.join(timeout_s)
        if proc.is_alive():
            proc.kill()
            proc.join()
            print(f"  {name:16s} KILLED after {time.perf_counter() - started:.1f} s (not bounded)")
            bad += 1
            continue
        if queue.empty():
            print(f"  {name:16s} process died with exit code {proc.exitcode}")
            bad += 1
            continue
        outcome, size, seconds, rss_mib = queue.get()
        slow = seconds > 3.0 or rss_mib > 512 or size > TEMPLATE_OUTPUT_BOUND or outcome.startswith("CRASH")
        bad += slow
        print(f"  {name:16s} {'SLOW/BIG ' if slow else ''}{outcome} | {seconds:.2f} s, peak RSS "
              f"{rss_mib:.0f} MiB, output {size} chars")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=10_000)
    ap.add_argument("--id-seqs", type=int, default=3_000)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--template-timeout", type=float, default=30.0)
    args = ap.parse_args(argv)
    total_problems = 0
    for name, path in sources().items():
        started = time.perf_counter()
        chunk = 500
        with mp.Pool(args.procs, initializer=_load, initargs=(str(path),)) as pool:
            text_parts = pool.map(_texts, [(name, f, min(chunk, args.texts - f))
                                           for f in range(0, args.texts, chunk)])
            id_parts = pool.map(_ids, [(name, f, min(chunk, args.id_seqs - f))
                                       for f in range(0, args.id_seqs, chunk)])
        problems: Counter = sum((p[0] for p in text_parts), Counter())
        examples = [e for p in text_parts for e in p[1]]
        slowest = max(text_parts, key=lambda p: p[2])
        id_problems: Counter = sum((p[0] for p in id_parts), Counter())
        id_examples = [e for p in id_parts for e in p[1]]
        crashes = sum(v for k, v in (problems + id_problems).items() if "crash" in k or "out-of-range" in k)
        total_problems += crashes
        seconds = time.perf_counter() - started
        print(f"{name}: {args.texts} texts, {args.id_seqs} id sequences in {seconds:.0f} s;"
              f" crashes {crashes}; slowest text check {slowest[2] * 1e3:.0f} ms ({slowest[3]} chars)")
        for problem, count in (problems + id_problems).most_common():
            example = next((e for e in examples + id_examples if e.startswith(problem)), "")
            print(f"    {count:6d} x {problem}   e.g. {example[len(problem) + 2:][:110]}")
    total_problems += templates(args.template_timeout)
    return 1 if total_problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
