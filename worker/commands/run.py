"""`orcd run`: generate in this process, streaming text to stdout as tokens arrive.

stdout carries only the generated text (or, with --json, one JSON object per token then a summary);
the timing line goes to stderr at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gpu.runner import Timings, encode_prompt, generate

from .common import add_model_flags, add_sampling_flags, read_prompt, sampling_params_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="generate text in-process (no queue)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompt", nargs="?", default="-", metavar="PROMPT|-",
                        help="prompt text; - or nothing: read stdin")
    add_model_flags(parser)
    add_sampling_flags(parser)
    parser.add_argument("--ctx-size", type=int, default=None, metavar="N",
                        help="KV context of the engine (default: prompt + max tokens)")
    parser.add_argument("--json", action="store_true", help="one JSON object per token, then a summary line")
    parser.set_defaults(func=run)


def open_tokenizer(path: Path) -> Any:
    from tokenizer import load_tokenizer

    return load_tokenizer(path)


def open_engine(path: Path, backend: str, max_context: int) -> Any:
    """Engine for one sequence of ``max_context`` positions."""
    from gpu.engine import load_engine

    return load_engine(path, backend=backend, max_batch=1, max_context=max_context)


def run(args: argparse.Namespace) -> int:
    from gguf_loader.assets import resolve_model

    params = sampling_params_from_args(args).resolve_seed()
    prompt = read_prompt(args, "run")
    if prompt is None:
        return 2
    path = resolve_model(args.model)
    tokenizer = open_tokenizer(path)
    prompt_ids = encode_prompt(tokenizer, prompt, chat=args.chat, system=args.system)
    engine = open_engine(path, args.backend, args.ctx_size or len(prompt_ids) + params.max_tokens)
    timings = Timings()
    last = None
    for result in generate(engine, tokenizer, prompt_ids, params, timings=timings):
        last = result
        if args.json:
            _print_json_step(result)
        elif result.text:
            sys.stdout.write(result.text)
            sys.stdout.flush()
    assert last is not None and last.finish_reason is not None
    if args.json:
        print(json.dumps({"finish_reason": last.finish_reason, "error": last.error, "seed": params.seed,
                          "usage": {"prompt_tokens": timings.prompt_tokens,
                                    "completion_tokens": timings.completion_tokens},
                          "timings": timings.as_dict()}), flush=True)
    elif sys.stdout.isatty():
        sys.stdout.write("\n")
    ttft = f"{timings.ttft_s * 1000:.0f} ms" if timings.ttft_s is not None else "n/a"
    print(f"orcd run: {timings.prompt_tokens} prompt tokens, prefill {timings.prefill_tps:.1f} tok/s; "
          f"{timings.completion_tokens} generated, decode {timings.decode_tps:.1f} tok/s; TTFT {ttft}; "
          f"finish {last.finish_reason}; seed {params.seed}; backend {engine.backend}", file=sys.stderr)
    return 1 if last.finish_reason == "error" else 0


def _print_json_step(result: Any) -> None:
    if result.token_id is None and not result.text:
        return
    line: dict[str, Any] = {"token_id": result.token_id, "text": result.text}
    if result.logprobs is not None:
        line["logprob"] = result.logprobs.logprob
        line["top_logprobs"] = [{"id": i, "logprob": lp} for i, lp in result.logprobs.top]
    print(json.dumps(line, ensure_ascii=False), flush=True)
