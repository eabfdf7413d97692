"""The product's errors, one tree:

    TokenRelayError
    ├── InvalidRequest          bad client input (HTTP 400)
    │   ├── InvalidJobId
    │   ├── InvalidEventId
    │   ├── UnknownModel
    │   └── UnknownGraph
    ├── JobNotFound             unknown or expired job (HTTP 404)
    ├── PayloadTooLarge         body over the limit (HTTP 413)
    ├── LimitExceeded           a quota is used up (HTTP 429, Retry-After)
    ├── IdempotencyKeyReused    an Idempotency-Key sent again with another body (HTTP 422)
    ├── IdempotencyKeyInUse     the first request with that key is still being admitted (HTTP 409)
    ├── ServiceUnavailable      Redis or the broker cannot be reached (HTTP 503)
    │   └── Overloaded          this gateway is saturated (HTTP 503, code `overloaded`, Retry-After >= 2)
    ├── ModelNotConfigured      a worker lacks a provider's credentials
    └── ClientError             raised by tokenrelay.Client for an error answer
"""

from __future__ import annotations


class TokenRelayError(Exception):
    """Base class of every error the product raises on purpose."""

    status_code = 500
    error_type = "internal_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(TokenRelayError):
    """Raised when a client's input is malformed or outside the limits."""

    status_code = 400
    error_type = "invalid_request_error"


class InvalidJobId(InvalidRequest):
    """Raised when a string is not a well-formed job id."""

    def __init__(self, job_id: object) -> None:
        super().__init__("job id must be 32 lowercase hex characters", param="job_id")


class InvalidEventId(InvalidRequest):
    """Raised when a Last-Event-ID is not `<attempt>-<seq>` or names no event of the job."""

    def __init__(self, event_id: object, reason: str = "is not an event id of the form <attempt>-<seq>") -> None:
        super().__init__(f"Last-Event-ID {str(event_id)[:64]!r} {reason}", param="last_event_id")


class UnknownModel(InvalidRequest):
    """Raised when a client names a model the server does not allow."""

    def __init__(self, model: str, allowed: list[str]) -> None:
        super().__init__(
            f"model {model[:100]!r} is not available; choose one of: {', '.join(allowed)}", param="model"
        )
        self.allowed = allowed


class UnknownGraph(InvalidRequest):
    """Raised when a client names a graph that is not in the server's registry."""

    def __init__(self, graph: str, known: list[str]) -> None:
        super().__init__(
            f"graph {graph[:100]!r} is not available; choose one of: {', '.join(known) or '(none)'}", param="graph"
        )
        self.known = known


class JobNotFound(TokenRelayError):
    """Raised when a job id names no job (never created, or expired after retention)."""

    status_code = 404
    error_type = "not_found_error"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} not found (unknown, or expired after retention)", param="job_id")


class PayloadTooLarge(TokenRelayError):
    """Raised when a request body is larger than max_body_bytes."""

    status_code = 413
    error_type = "request_too_large"


class LimitExceeded(TokenRelayError):
    """Raised when a quota is used up; `param` names the setting, `retry_after_s` when to try again."""

    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, limit: str, retry_after_s: int) -> None:
        super().__init__(message, param=limit)
        self.retry_after_s = max(1, int(retry_after_s))


class ServiceUnavailable(TokenRelayError):
    """Raised when Redis or the broker cannot be reached."""

    status_code = 503
    error_type = "service_unavailable"


class Overloaded(ServiceUnavailable):
    """Raised when this gateway has more submits in progress than it takes at once: busy, not down."""

    error_type = "overloaded"
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.retry_after_s = max(2, int(retry_after_s))


class IdempotencyKeyReused(TokenRelayError):
    """Raised when an Idempotency-Key comes back with a request body other than its first one."""

    status_code = 422
    error_type = "invalid_request_error"
    code = "idempotency_key_reused"

    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was used with a different request body; use a new key for a new "
                         "request", param="Idempotency-Key")


class IdempotencyKeyInUse(TokenRelayError):
    """Raised when the first request with an Idempotency-Key has not finished being admitted."""

    status_code = 409
    error_type = "conflict_error"
    code = "idempotency_key_in_use"

    def __init__(self) -> None:
        super().__init__("a request with this Idempotency-Key is still being admitted; retry shortly",
                         param="Idempotency-Key")


class ModelNotConfigured(TokenRelayError):
    """Raised on a worker when a model's provider has no credentials configured."""


class ClientError(TokenRelayError):
    """Raised by the Python client when the gateway answers with an error."""

    def __init__(self, status_code: int, error_type: str, message: str, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.status_code = status_code
        self.error_type = error_type
