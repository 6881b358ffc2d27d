"""Random jobs and the checks every fault-injection run applies to a job's stream.

`check_stream` reads a job's events the way a client does (`Client.stream`: replay then live) and
classifies it: ``done``/``error`` when the stream is whole (seqs 1..n, one ``queued`` first, exactly
one end event, last), else what went wrong (``gap``, ``duplicate``, ``no-end``, ``timeout``).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field

from gpu.params import SamplingParams
from worker.errors import JobError
from worker.schemas import Job


def random_job(rng: random.Random, index: int, *, max_tokens: tuple[int, int] = (4, 40)) -> Job:
    """A mix of prompts, chat turns, sampling settings and stop strings; ~3% too long for a 256 context."""
    params = SamplingParams(
        max_tokens=rng.randint(*max_tokens), seed=rng.getrandbits(32),
        temperature=rng.choice((0.0, 0.7, 1.0, 1.5)), top_k=rng.choice((0, 1, 40)),
        top_p=rng.choice((0.5, 0.95, 1.0)), repetition_penalty=rng.choice((1.0, 1.1)),
        stop=rng.choice(([], ["e"], ["\n\n", "xyz"])), ignore_eos=rng.random() < 0.7,
        logprobs=rng.choice((0, 0, 0, 2)))
    kind = rng.random()
    if kind < 0.03:
        return Job(prompt=f"too long {index} " + "x" * 400, params=params)  # must end as ContextTooLong
    if kind < 0.25:
        return Job(messages=[{"role": "system", "content": "be brief"},
                             {"role": "user", "content": f"question {index}?"}], params=params)
    return Job(prompt=f"job {index}: " + "lorem ipsum " * rng.randint(0, 8), chat=rng.random() < 0.3,
               params=params, priority=rng.randint(0, 9))


@dataclass
class StreamCheck:
    job_id: str
    outcome: str  # "done" "error" "gap" "duplicate" "no-end" "timeout" "client-error"
    n_events: int = 0
    finish_reason: str | None = None
    error_type: str | None = None
    attempts: int = 0
    seconds: float = 0.0
    detail: str = ""


def check_stream(client, job_id: str, timeout_s: float) -> StreamCheck:
    started = time.monotonic()
    events = []
    try:
        for event in client.stream(job_id, timeout_s=timeout_s):
            events.append(event)
    except JobError as exc:
        outcome = "timeout" if type(exc).__name__ == "JobTimeout" else "client-error"
        return StreamCheck(job_id, outcome, len(events), seconds=time.monotonic() - started,
                           detail=f"{type(exc).__name__}: {exc}"[:300])
    except Exception as exc:  # a Redis outage surfacing in the client is a finding of its own
        return StreamCheck(job_id, "client-error", len(events), seconds=time.monotonic() - started,
                           detail=f"{type(exc).__name__}: {exc}"[:300])
    seconds = time.monotonic() - started
    seqs = [e.seq for e in events]
    attempts = sum(e.type == "started" for e in events)
    if len(set(seqs)) != len(seqs):
        return StreamCheck(job_id, "duplicate", len(events), attempts=attempts, seconds=seconds,
                           detail=str(seqs))
    if seqs != list(range(1, len(seqs) + 1)):
        return StreamCheck(job_id, "gap", len(events), attempts=attempts, seconds=seconds, detail=str(seqs))
    ends = [e for e in events if e.type in ("done", "error")]
    if len(ends) != 1 or events[-1] is not ends[0] or events[0].type != "queued":
        return StreamCheck(job_id, "no-end", len(events), attempts=attempts, seconds=seconds,
                           detail=str([e.type for e in events]))
    end = ends[0]
    return StreamCheck(job_id, end.type, len(events), getattr(end, "finish_reason", None),
                       getattr(end, "error_type", None), attempts, seconds)


@dataclass
class Tally:
    checks: list[StreamCheck] = field(default_factory=list)

    def add(self, check: StreamCheck) -> None:
        self.checks.append(check)

    def summary(self) -> str:
        outcomes = Counter(c.outcome for c in self.checks)
        ended = [c for c in self.checks if c.outcome in ("done", "error")]
        reasons = Counter(c.finish_reason or c.error_type for c in ended)
        retried = sum(c.attempts > 1 for c in self.checks)
        return (f"{len(self.checks)} jobs: " + ", ".join(f"{k} {v}" for k, v in outcomes.most_common())
                + " | end reasons: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common())
                + f" | re-run after a crash: {retried}")

    @property
    def broken(self) -> list[StreamCheck]:
        return [c for c in self.checks if c.outcome not in ("done", "error")]
