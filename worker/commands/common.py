"""Flags shared by the commands that generate (`orcd run`, `orcd generate`): model, backend, sampling."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from gpu.params import MAX_LOGPROBS, SamplingParams

# SamplingParams field -> flag (dest is the field name, so the mapping is also the error wording)
SAMPLING_FLAGS = {
    "max_tokens": "--max-tokens",
    "temperature": "--temperature",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "min_p": "--min-p",
    "repetition_penalty": "--repeat-penalty",
    "presence_penalty": "--presence-penalty",
    "frequency_penalty": "--frequency-penalty",
    "penalty_last_n": "--repeat-last-n",
    "stop": "--stop",
    "seed": "--seed",
    "logprobs": "--logprobs",
    "ignore_eos": "--ignore-eos",
}


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", default=None, metavar="NAME|PATH",
                        help="catalogue name or GGUF path (default: the default model, fetched on first use)")
    parser.add_argument("--backend", choices=("auto", "numpy", "cuda"), default="auto",
                        help="engine backend (auto: cuda when a GPU is usable, else numpy)")


def add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    """Sampling flags; each defaults to None, meaning SamplingParams' own default."""
    g = parser.add_argument_group("sampling (defaults: llama.cpp's)")
    g.add_argument("--max-tokens", "-n", dest="max_tokens", type=int, help="tokens to generate at most")
    g.add_argument("--temperature", "--temp", dest="temperature", type=float, help="0 = greedy")
    g.add_argument("--top-k", dest="top_k", type=int, help="0 = off")
    g.add_argument("--top-p", dest="top_p", type=float, help="1 = off")
    g.add_argument("--min-p", dest="min_p", type=float, help="0 = off")
    g.add_argument("--repeat-penalty", dest="repetition_penalty", type=float, help="1 = off")
    g.add_argument("--presence-penalty", dest="presence_penalty", type=float)
    g.add_argument("--frequency-penalty", dest="frequency_penalty", type=float)
    g.add_argument("--repeat-last-n", dest="penalty_last_n", type=int,
                   help="tokens the penalties look back on (-1 = all)")
    g.add_argument("--stop", dest="stop", action="append", metavar="TEXT", help="stop string (repeatable)")
    g.add_argument("--seed", dest="seed", type=int, help="sampling seed (default: random, reported)")
    g.add_argument("--logprobs", dest="logprobs", type=int, metavar="N",
                   help=f"report the top-N log-probabilities per token (0..{MAX_LOGPROBS})")
    g.add_argument("--ignore-eos", dest="ignore_eos", action="store_true", default=None,
                   help="never stop at end-of-generation tokens")
    g.add_argument("--chat", action="store_true", help="render the prompt with the model's chat template")
    g.add_argument("--system", default=None, metavar="TEXT", help="system message (with --chat)")


def sampling_params_from_args(args: argparse.Namespace) -> SamplingParams:
    """SamplingParams from the flags given; an invalid value prints one line naming the flag, exit 2."""
    given = {f: getattr(args, f) for f in SAMPLING_FLAGS if getattr(args, f, None) is not None}
    try:
        return SamplingParams(**given)
    except ValidationError as exc:
        err = exc.errors()[0]
        flag = SAMPLING_FLAGS.get(str(err["loc"][0]), str(err["loc"][0]))
        print(f"orcd: invalid {flag} {given.get(err['loc'][0])!r}: {err['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


def read_prompt(args: argparse.Namespace, command: str) -> str | None:
    """The PROMPT argument (``-``: standard input); None, after one line on stderr, when it is empty."""
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt:
        print(f"orcd {command}: empty prompt", file=sys.stderr)
        return None
    return prompt
