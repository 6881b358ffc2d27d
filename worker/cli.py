"""`orcd` command line: one subcommand per module in `worker/commands/`.

Each module exposes ``register(subparsers)`` which adds its parser and sets ``func(args) -> int``.
Errors of the project's hierarchies print one line on stderr and exit non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# subcommand name -> module under worker.commands (imported lazily so `orcd inspect` never loads Celery)
COMMANDS = {
    "inspect": "inspect",
    "tokenize": "tokenize",
    "detokenize": "tokenize",
    "run": "run",
    "worker": "worker",
    "generate": "generate",
    "batch": "batch",
    "status": "status",
    "serve": "serve",
    "demo": "demo",
}


def _known_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = []
    for module, name in (
        ("gguf_loader.errors", "GGUFError"),
        ("tokenizer.errors", "TokenizerError"),
        ("gpu.errors", "EngineError"),
        ("worker.errors", "JobError"),
        ("worker.errors", "WorkerError"),
    ):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orcd", description="worker-orcd: distributed LLM inference")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = next((a for a in argv if a in COMMANDS), None)
    modules = [COMMANDS[wanted]] if wanted else sorted(set(COMMANDS.values()))
    for module_name in dict.fromkeys(modules):
        try:
            module = importlib.import_module(f"worker.commands.{module_name}")
        except ImportError as exc:
            if wanted:
                raise
            logging.getLogger(__name__).debug("command module %s unavailable: %s", module_name, exc)
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except _known_errors() as exc:
        print(f"orcd {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
