"""`orcd generate`: enqueue one job and stream its text to stdout as it arrives.

Status and timings go to stderr. The model and sampling flags are those of `orcd run`, and the same
seed and inputs give the same text. With no Redis configured, a private Valkey server and an
in-process worker serve the job (the production code path, on one machine).
"""

from __future__ import annotations

import argparse
import sys

from .common import add_model_flags, add_sampling_flags, read_prompt, sampling_params_from_args
from .queue_flags import add_connection_flags, add_worker_flags, cancel_quietly, connect, settings_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("generate", help="enqueue a job and stream its text",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompt", nargs="?", default="-", metavar="PROMPT|-",
                        help="prompt text; - or nothing: read stdin")
    add_model_flags(parser)
    parser.set_defaults(backend=None)  # unset: ORCD_BACKEND, else auto
    add_sampling_flags(parser)
    parser.add_argument("--priority", type=int, default=5, help="0..9, 9 = most urgent (5)")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="give up after S seconds without an event")
    parser.add_argument("--json", action="store_true", help="print each event as one JSON line instead")
    add_connection_flags(parser)
    add_worker_flags(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from worker.schemas import Job

    params = sampling_params_from_args(args).resolve_seed()
    prompt = read_prompt(args, "generate")
    if prompt is None:
        return 2
    settings = settings_from_args(args)
    job = Job(prompt=prompt, chat=args.chat, system=args.system, params=params, priority=args.priority)
    with connect(settings) as client:
        handle = client.submit(job)
        print(f"orcd generate: job {handle.id} queued on {settings.queue_name} (seed {params.seed})",
              file=sys.stderr)
        try:
            return stream_to_terminal(handle.stream(timeout_s=args.timeout), as_json=args.json)
        except KeyboardInterrupt:
            cancel_quietly(client, [handle.id])  # the worker frees its slot within a step
            raise


def stream_to_terminal(events, *, as_json: bool = False) -> int:
    """Text to stdout as it arrives, status to stderr; 0 on done, 1 on error."""
    for event in events:
        if as_json:
            print(event.model_dump_json(), flush=True)
        elif event.type == "tokens":
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif event.type == "started":
            again = f", attempt {event.attempt}" if event.attempt > 1 else ""
            print(f"orcd generate: started on {event.worker} after {event.queue_ms:.0f} ms{again}",
                  file=sys.stderr)
        if event.type == "done":
            if not as_json and sys.stdout.isatty():
                sys.stdout.write("\n")
            t = event.timings
            figures = (f"; queue {t.queue_ms:.0f} ms, TTFT {t.ttft_ms:.0f} ms, {t.decode_tok_s:.1f} tok/s"
                       if t else "")
            print(f"orcd generate: {event.finish_reason}; {event.usage.prompt_tokens} prompt + "
                  f"{event.usage.completion_tokens} generated tokens{figures}", file=sys.stderr)
            return 0
        if event.type == "error":
            print(f"orcd generate: {event.error_type}: {event.message}", file=sys.stderr)
            return 1
    return 1
