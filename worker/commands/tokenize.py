"""`orcd tokenize` and `orcd detokenize`: check a model's tokenization from scripts.

orcd tokenize [--model NAME|PATH] [--special] [--no-bos] TEXT|-     -> JSON list of ids
orcd detokenize [--model NAME|PATH] [--skip-special] [--json] IDS...|-  -> the text
"""

from __future__ import annotations

import argparse
import json
import re
import sys

_MODEL_HELP = "catalogue name or GGUF path (default: the default model, fetched on first use)"


def register(subparsers: argparse._SubParsersAction) -> None:
    enc = subparsers.add_parser("tokenize", help="print the token ids of a text as a JSON list")
    enc.add_argument("--model", "-m", default=None, metavar="NAME|PATH", help=_MODEL_HELP)
    enc.add_argument(
        "--special",
        action="store_true",
        help="recognise control tokens such as <|im_start|> written in the text",
    )
    enc.add_argument(
        "--no-bos", action="store_true", help="add no BOS/EOS even where the model asks for them"
    )
    enc.add_argument("text", metavar="TEXT|-", help="the text, or - to read it from stdin")
    enc.set_defaults(func=run_tokenize)

    dec = subparsers.add_parser("detokenize", help="print the text of token ids")
    dec.add_argument("--model", "-m", default=None, metavar="NAME|PATH", help=_MODEL_HELP)
    dec.add_argument("--skip-special", action="store_true", help="leave out control tokens (BOS, EOS, ...)")
    dec.add_argument("--json", action="store_true", help="print the text as a JSON string")
    dec.add_argument(
        "ids",
        nargs="+",
        metavar="IDS",
        help="token ids (separate arguments, or one JSON list), or - to read them from stdin",
    )
    dec.set_defaults(func=run_detokenize)


def _tokenizer(model: str | None):
    from gguf_loader.assets import resolve_model
    from tokenizer import load_tokenizer

    return load_tokenizer(resolve_model(model))


def run_tokenize(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    ids = _tokenizer(args.model).encode(text, add_special=not args.no_bos, parse_special=args.special)
    print(json.dumps(ids))
    return 0


def run_detokenize(args: argparse.Namespace) -> int:
    raw = sys.stdin.read() if args.ids == ["-"] else " ".join(args.ids)
    words = [w for w in re.split(r"[\s,\[\]]+", raw) if w]
    if not all(re.fullmatch(r"-?\d+", w) for w in words):
        print(f"orcd detokenize: token ids must be integers, got {raw.strip()[:80]!r}", file=sys.stderr)
        return 2
    text = _tokenizer(args.model).decode([int(w) for w in words], skip_special=args.skip_special)
    print(json.dumps(text, ensure_ascii=False) if args.json else text)
    return 0
