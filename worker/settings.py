"""Worker and client settings: ``ORCD_*`` environment variables, overridden by command-line flags.

Invalid settings raise `SettingsError` at start with the offending names, before any model loads.
The per-attempt time limit and the broker's visibility timeout are tied: a job redelivered while its
first attempt still runs would be generated twice, so the visibility timeout must exceed the longest
attempt (docs/queue.md).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gguf_loader.assets import DEFAULT_MODEL

from . import keys
from .errors import SettingsError

VISIBILITY_MARGIN_S = 30.0  # visibility timeout minus the longest attempt, at least (see docs/queue.md)


class Settings(BaseSettings):
    """One worker's (or client's) configuration."""

    model_config = SettingsConfigDict(env_prefix="ORCD_", extra="forbid", frozen=True)

    redis_url: str | None = Field(None, description="unset: a private embedded Valkey server")
    model: str = Field(DEFAULT_MODEL, min_length=1, description="catalogue name or GGUF path")
    gpu: int = Field(0, ge=0, description="CUDA ordinal; the worker pins CUDA_VISIBLE_DEVICES to it")
    backend: Literal["auto", "numpy", "cuda"] = "auto"
    max_batch: int = Field(8, ge=1, le=1024)
    max_context: int = Field(2048, ge=16)
    queue: str | None = Field(None, description="Celery queue; default orcd.<model-name>")
    max_queue: int = Field(1000, ge=1, description="enqueue raises QueueFull at this many waiting jobs")
    concurrency: int | None = Field(None, ge=1, description="jobs taken at once; default 2*max_batch")
    chunk_tokens: int = Field(8, ge=1, description="tokens per chunk event, at most")
    chunk_ms: float = Field(20.0, ge=0.0, description="a chunk is sent when its oldest token is this old")
    job_timeout_s: float = Field(600.0, gt=0.0, description="longest attempt of one job on a worker")
    visibility_timeout_s: float = Field(900.0, gt=0.0, description="unacked job redelivered after this")
    restore_interval_s: float = Field(10.0, gt=0.0, description="how often a worker looks for lost jobs")
    result_ttl_s: int = Field(3600, ge=1, description="job records live this long after the job ends")
    heartbeat_s: float = Field(5.0, gt=0.0)
    worker_name: str | None = Field(None, description="default <model-name>-gpu<N>@<host>-<pid>")
    step_delay_ms: float = Field(0.0, ge=0.0, description="debug: sleep between decode steps (slow GPU)")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics of the worker; 0 = off")
    gil_switch_us: int = Field(200, ge=50, le=10000, description="the worker process's GIL switch interval "
                               "(sys.setswitchinterval): short, so the scheduler thread gets the GIL back "
                               "soon after each GPU wait (docs/queue.md)")
    admit_window_ms: float = Field(25.0, ge=0.0, le=1000.0, description="per scheduler turn, keep "
                                   "prefilling jobs that arrive during a prefill this long before decoding")
    engine_process: bool = Field(True, description="run the engine and its scheduler in a child process, "
                                 "clear of the worker's other threads (worker/engine_process.py)")

    @model_validator(mode="after")
    def _visibility_covers_attempt(self) -> Settings:
        if self.visibility_timeout_s < self.job_timeout_s + min(VISIBILITY_MARGIN_S, self.job_timeout_s):
            raise ValueError(
                f"visibility_timeout_s ({self.visibility_timeout_s:g}) must exceed job_timeout_s "
                f"({self.job_timeout_s:g}) by at least min({VISIBILITY_MARGIN_S:g}, job_timeout_s): "
                "a job still running when its visibility timeout ends is redelivered and run twice")
        return self

    @property
    def queue_name(self) -> str:
        return self.queue or keys.queue(self.model)

    @property
    def model_name(self) -> str:
        return keys.model_name(self.model)

    @property
    def worker_concurrency(self) -> int:
        return self.concurrency or 2 * self.max_batch


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment with `overrides` (flags; None means "not given") on top."""
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'} "
            f"(ORCD_{str(err['loc'][0]).upper() if err['loc'] else '*'}): {err['msg']}"
            for err in exc.errors())
        raise SettingsError(f"invalid settings: {problems}") from None
