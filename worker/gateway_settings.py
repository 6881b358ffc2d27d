"""Settings of `orcd serve` (env ``ORCD_GATEWAY_*`` or flags)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from gguf_loader.assets import DEFAULT_MODEL

LOCAL_REDIS = "redis://127.0.0.1:6379/0"


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORCD_GATEWAY_", frozen=True)

    redis_url: str | None = Field(
        None, description="broker and event store; None: ORCD_REDIS_URL, else local"
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(1 << 20, ge=1, description="larger request bodies get 413")
    keepalive_s: float = Field(10.0, gt=0, description="SSE comment interval while no event comes")
    cancel_on_disconnect: bool = Field(True, description="cancel a job whose streaming client went away")
    default_model: str = DEFAULT_MODEL
    max_queue: int | None = Field(
        None, ge=1, description="429 at this many waiting jobs; None: ORCD_MAX_QUEUE"
    )
    retry_after_s: int = Field(2, ge=1, description="Retry-After of a 429 when the queue is full")
