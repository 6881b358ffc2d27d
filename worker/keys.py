"""Every Redis name the queue uses, built on one prefix (``orcd``).

Per job: ``orcd:job:<id>:meta`` (hash), ``orcd:job:<id>:events`` (stream, the replay log),
``orcd:job:<id>`` (pub/sub channel, live), ``orcd:job:<id>:cancel`` (flag). Per worker:
``orcd:worker:<name>`` (heartbeat hash with TTL). Per model: the Celery queue ``orcd.<model>``, which
the Redis transport stores as one list per priority step (``orcd.<model>``, ``orcd.<model>:1`` ...), and
``orcd:queue:<queue>:groups`` (the job counts of its waiting group messages).
"""

from __future__ import annotations

import re
from pathlib import Path

PREFIX = "orcd"
PRIORITY_STEPS = tuple(range(10))  # Celery priorities 0 (first) .. 9 (last), one Redis list each
PRIORITY_SEP = ":"  # between a queue's name and its priority step in the list's name

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_MODEL_NAME = re.compile(r"[^a-z0-9_.-]+")


def valid_job_id(job_id: str) -> bool:
    return bool(_JOB_ID.match(job_id))


def job_meta(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:meta"


def job_events(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:events"


def job_channel(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def job_cancel(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:cancel"


def worker(name: str) -> str:
    return f"{PREFIX}:worker:{name}"


WORKER_PATTERN = f"{PREFIX}:worker:*"


def model_name(model: str | Path) -> str:
    """A model's queue-safe name: the catalogue name, or a GGUF path's lower-cased stem."""
    text = str(model)
    stem = Path(text).name.removesuffix(".gguf") if ("/" in text or text.endswith(".gguf")) else text
    return _MODEL_NAME.sub("-", stem.lower()).strip("-") or "model"


def queue(model: str | Path) -> str:
    """The Celery queue of a model: ``orcd.<model-name>``."""
    return f"{PREFIX}.{model_name(model)}"


def queue_lists(queue_name: str) -> list[str]:
    """The Redis lists holding a Celery queue's waiting messages, one per priority step."""
    return [queue_name if step == 0 else f"{queue_name}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


def queue_groups(queue_name: str) -> str:
    """Hash of a queue's waiting group messages: group id → its number of jobs (worker/enqueue.py)."""
    return f"{PREFIX}:queue:{queue_name}:groups"


def celery_priority(job_priority: int) -> int:
    """Job priority 0..9 (9 = most urgent) → Celery's Redis priority (0 = served first)."""
    return max(PRIORITY_STEPS) - job_priority
