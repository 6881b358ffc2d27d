"""Log lines about one job, tagged with its id and correlation id.

    log = job_logger(logger, job.id, job.correlation_id)
    log.info("attempt %d", 2)  # → "job j1 cid req-7: attempt 2"

The ids are also record attributes (`job_id`, `correlation_id`), for handlers that emit structured
logs. A job without a correlation id shows ``cid -`` (the gateway's format).
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any


class JobLogger(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**self.extra, **kwargs.get("extra", {})}
        return f"job {self.extra['job_id']} cid {self.extra['correlation_id']}: {msg}", kwargs


def job_logger(logger: logging.Logger, job_id: str | None, correlation_id: str | None) -> JobLogger:
    return JobLogger(logger, {"job_id": job_id or "-", "correlation_id": correlation_id or "-"})
