"""HTTP-facing errors of the gateway and their two JSON shapes (the gateway's and OpenAI's).

Every failure a client can cause maps to a 4xx with the offending field named; a 500 means a bug.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """An error answered to the client: HTTP `status`, a short `type`, and the field at fault."""

    status = 500
    type = "internal_error"
    openai_type = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self, openai: bool, correlation_id: str) -> dict[str, Any]:
        if openai:
            return {
                "error": {
                    "message": self.message,
                    "type": self.openai_type,
                    "param": self.param,
                    "code": self.code,
                }
            }
        return {
            "error": {
                "type": self.type,
                "message": self.message,
                "field": self.param,
                "correlation_id": correlation_id,
            }
        }


class InvalidRequest(GatewayError):
    status, type, openai_type = 422, "validation_error", "invalid_request_error"


class NotFound(GatewayError):
    status, type, openai_type = 404, "not_found", "invalid_request_error"


class UnknownModel(NotFound):
    type = "model_not_found"


class Conflict(GatewayError):
    status, type, openai_type = 409, "conflict", "invalid_request_error"


class PayloadTooLarge(GatewayError):
    status, type, openai_type = 413, "payload_too_large", "invalid_request_error"


class QueueFull(GatewayError):
    status, type, openai_type = 429, "queue_full", "rate_limit_error"

    def __init__(self, message: str, *, retry_after_s: int, **kwargs: Any) -> None:
        super().__init__(message, code="queue_full", headers={"Retry-After": str(retry_after_s)}, **kwargs)
        self.retry_after_s = retry_after_s


class NoWorker(GatewayError):
    status, type, openai_type = 503, "no_worker", "service_unavailable"


class BrokerUnavailable(GatewayError):
    status, type, openai_type = 503, "broker_unavailable", "service_unavailable"


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """First pydantic/FastAPI error as (message, dotted field path without the 'body' prefix)."""
    if not errors:
        return "invalid request", None
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    field = ".".join(loc) or None
    return (f"{field}: {first.get('msg', 'invalid')}" if field else first.get("msg", "invalid")), field
