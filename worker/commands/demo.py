"""`orcd demo`: a few chat jobs at once on the default model, streamed side by side.

With no ORCD_REDIS_URL this starts a private Valkey server and an in-process worker, so one command
shows the whole path: client → Redis queue → Celery worker → continuous-batching scheduler → engine →
token chunks on each job's stream.
"""

from __future__ import annotations

import argparse
import queue
import shutil
import sys
import threading

from .common import add_model_flags
from .queue_flags import add_connection_flags, add_worker_flags, cancel_quietly, connect, settings_from_args

PROMPTS = (
    "Write a haiku about a lighthouse.",
    "In two sentences, why is the sky blue?",
    "Give three tips for learning a new language.",
    "What is a GPU, in one paragraph?",
    "Name five fruits and one fact about each.",
    "Describe a rainy day in the city.",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="stream a few concurrent jobs (embedded by default)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(parser)
    parser.set_defaults(backend=None)  # unset: ORCD_BACKEND, else auto
    parser.add_argument("-j", "--jobs", type=int, default=4, help=f"concurrent jobs (1..{len(PROMPTS)})")
    parser.add_argument("-n", "--max-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    add_connection_flags(parser)
    add_worker_flags(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gpu.params import SamplingParams
    from worker.schemas import Job

    prompts = PROMPTS[:max(1, min(args.jobs, len(PROMPTS)))]
    settings = settings_from_args(args)
    events: queue.SimpleQueue = queue.SimpleQueue()
    with connect(settings) as client:
        handles = [client.submit(Job(prompt=p, chat=True, priority=5, params=SamplingParams(
            max_tokens=args.max_tokens, seed=args.seed + k, temperature=0.7))) for k, p in enumerate(prompts)]

        def follow(k: int) -> None:
            try:
                for event in handles[k].stream(timeout_s=300):
                    events.put((k, event))
            except Exception as exc:  # shown as that job's failure, the others go on
                events.put((k, exc))
            events.put((k, None))

        for k in range(len(handles)):
            threading.Thread(target=follow, args=(k,), daemon=True).start()
        try:
            return Board(prompts).show(events, len(handles))
        except KeyboardInterrupt:
            cancel_quietly(client, [h.id for h in handles])
            raise


class Board:
    """One line per job, redrawn in place on a terminal; plain transcripts otherwise."""

    def __init__(self, prompts: tuple[str, ...]) -> None:
        self.prompts = prompts
        self.texts = [""] * len(prompts)
        self.status = ["queued"] * len(prompts)
        self.tty = sys.stdout.isatty()
        self.width = shutil.get_terminal_size().columns
        self.drawn = False

    def _draw(self) -> None:
        if self.drawn:
            sys.stdout.write(f"\x1b[{len(self.prompts)}F")
        for k, text in enumerate(self.texts):
            line = f"[{k + 1}] {self.status[k]:>9} | " + " ".join(text.split())
            tail = line if len(line) < self.width else line[:12] + "…" + line[-(self.width - 14):]
            sys.stdout.write("\x1b[2K" + tail + "\n")
        sys.stdout.flush()
        self.drawn = True

    def show(self, events: queue.SimpleQueue, n_jobs: int) -> int:
        open_jobs, failures, summary = n_jobs, 0, []
        while open_jobs:
            k, event = events.get()
            if event is None:
                open_jobs -= 1
                continue
            if isinstance(event, Exception):
                self.status[k], failures = "failed", failures + 1
                summary.append(f"[{k + 1}] {type(event).__name__}: {event}")
            elif event.type == "started":
                self.status[k] = "running"
            elif event.type == "tokens":
                self.texts[k] += event.text
            elif event.type == "done":
                self.status[k] = event.finish_reason
                t = event.timings
                figures = f"TTFT {t.ttft_ms:.0f} ms, {t.decode_tok_s:.1f} tok/s" if t else ""
                summary.append(f"[{k + 1}] {event.usage.completion_tokens} tokens, {figures}")
            elif event.type == "error":
                self.status[k], failures = "error", failures + 1
                summary.append(f"[{k + 1}] {event.error_type}: {event.message}")
            if self.tty:
                self._draw()
        if not self.tty:
            for k, prompt in enumerate(self.prompts):
                print(f"[{k + 1}] {prompt}\n{self.texts[k].strip()}\n")
        for line in sorted(summary):
            print(line, file=sys.stderr)
        return 1 if failures else 0
