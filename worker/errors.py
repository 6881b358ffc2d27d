"""Errors of the job queue: a flat list of narrow classes under two roots.

`JobError` is about one job (the client's input or its fate); `WorkerError` is about the process
(settings, broker, model loading). Messages name the job id, queue or setting.
"""

from __future__ import annotations


class JobError(Exception):
    """Root of every error about one job."""


class InvalidJob(JobError):
    """The job fails validation (bad field, empty prompt, unknown model); raised before enqueue."""


class QueueFull(JobError):
    """The model's queue holds `limit` jobs already; enqueue again later."""

    def __init__(self, queue: str, depth: int, limit: int) -> None:
        super().__init__(f"queue {queue!r} is full ({depth} jobs waiting, limit {limit})")
        self.queue, self.depth, self.limit = queue, depth, limit


class JobNotFound(JobError):
    """No job with this id is known to Redis (never submitted, or its records expired)."""


class JobFailed(JobError):
    """The job ended with an `error` event; `error_type` is the worker-side class name."""

    def __init__(self, job_id: str, error_type: str, message: str) -> None:
        super().__init__(f"job {job_id} failed: {error_type}: {message}")
        self.job_id, self.error_type, self.message = job_id, error_type, message


class JobTimeout(JobError):
    """The client stopped waiting for a job's events."""


class StreamGap(JobError):
    """The job's log lacks seqs `first_missing`..`next_seq - 1` while later ones exist: Redis lost them
    (e.g. restarted without persistence mid-job). A log only grows by increasing seq, so they never come."""

    def __init__(self, job_id: str, first_missing: int, next_seq: int) -> None:
        super().__init__(f"job {job_id}: events seq {first_missing}-{next_seq - 1} are lost from its log (it "
                         f"resumes at seq {next_seq}; Redis lost them, e.g. restarted without persistence)")
        self.job_id, self.first_missing, self.next_seq = job_id, first_missing, next_seq


class ContextTooLong(JobError):
    """The prompt plus max_tokens does not fit in the worker's max context."""


class DeadlineExceeded(JobError):
    """The job's deadline (or the worker's per-attempt time limit) passed before it finished."""


class WorkerError(Exception):
    """Root of every error about the worker process or its connections."""


class SettingsError(WorkerError):
    """Invalid settings; the message names the setting (and its ORCD_* variable)."""


class BrokerUnavailable(WorkerError):
    """Redis (or the embedded Valkey server) cannot be reached or started."""


class SchedulerClosed(WorkerError):
    """A job was handed to a scheduler that has stopped."""


class EngineStartFailed(WorkerError):
    """The engine process could not load the model (its error type and message are in this one's)."""


class EngineProcessDied(WorkerError):
    """The engine process exited while the worker was serving; the jobs it held fail with this."""
