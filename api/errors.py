"""Every error answer of the gateway, in one shape: {"error": {"message", "type", "param", "code"}}.

Internal exception text never reaches a client: unexpected errors are logged and answered generically.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError as RedisOutOfMemory
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from tokenrelay.errors import IdempotencyKeyInUse, LimitExceeded, Overloaded, ServiceUnavailable, TokenRelayError

from .backpressure import OVERLOADED_RETRY_AFTER_S, PoolExhausted
from .schemas import ErrorBody

log = logging.getLogger("tokenrelay.gateway")

RETRY_AFTER_S = 1
RETRY_AFTER_FULL_S = 30


def error_response(status: int, error_type: str, message: str, param: str | None = None,
                   headers: dict[str, str] | None = None, code: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _union_member(part: object) -> bool:
    """Pydantic names the member of a union it tried (`dict[str,any]`, `NamedToolChoice`); fields are snake_case."""
    return isinstance(part, str) and ("[" in part or part[:1].isupper())


NOT_JSON = "the request body must be JSON, sent with the header Content-Type: application/json"


def _is_json(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    # FastAPI parses only a body declared as JSON; any other (or none) reaches validation as bytes.
    return media_type == "application/json" or media_type.endswith("+json")


def _describe(errors: list[dict], request: Request) -> tuple[str, str | None]:
    first = errors[0] if errors else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body",) and not _union_member(part)]
    param = ".".join(location) or None
    if first.get("type") == "json_invalid":
        return "request body is not valid JSON", None
    if tuple(first.get("loc", ())) == ("body",) and not _is_json(request):
        return NOT_JSON, None
    message = first.get("msg", "invalid request")
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return f"{param or 'request body'}: {message}", param


def _methods_of(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TokenRelayError)
    async def _product_error(request: Request, exc: TokenRelayError) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if isinstance(exc, ServiceUnavailable) else None
        if isinstance(exc, (LimitExceeded, Overloaded)):
            headers = {"Retry-After": str(exc.retry_after_s)}
        if isinstance(exc, IdempotencyKeyInUse):
            headers = {"Retry-After": str(RETRY_AFTER_S)}
        return error_response(exc.status_code, exc.error_type, exc.message, exc.param, headers, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _describe(list(exc.errors()), request)
        return error_response(400, "invalid_request_error", message, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        message = "no such route" if exc.status_code == 404 else str(exc.detail)
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # Starlette names only the first route's methods; a path may have several
            headers = {**(headers or {}), "Allow": ", ".join(_methods_of(request))}
        return error_response(exc.status_code, kind, message, headers=headers)

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("redis unavailable: %s", exc)
        return error_response(503, "service_unavailable", "the job store is unavailable; retry shortly",
                              headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(PoolExhausted)
    async def _saturated(request: Request, exc: Exception) -> JSONResponse:
        # Every connection of the pool stayed busy for its whole wait: busy, not down.
        log.warning("redis pool exhausted")
        error = Overloaded("this gateway is saturated; retry shortly", retry_after_s=OVERLOADED_RETRY_AFTER_S)
        return error_response(503, error.error_type, error.message, headers={"Retry-After": str(error.retry_after_s)},
                              code=error.code)

    @app.exception_handler(RedisOutOfMemory)
    async def _redis_full(request: Request, exc: Exception) -> JSONResponse:
        log.warning("redis refused a write: out of memory")
        return error_response(503, "service_unavailable", "the job store is full; retry later",
                              headers={"Retry-After": str(RETRY_AFTER_FULL_S)})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error")


ERROR_RESPONSES = {
    400: {"model": ErrorBody, "description": "Malformed or out-of-range input."},
    401: {"model": ErrorBody, "description": "Missing or invalid API key (or stream token)."},
    404: {"model": ErrorBody, "description": "Unknown or expired job, or a job of another key."},
    409: {"model": ErrorBody, "description": "The first request with this Idempotency-Key is still being "
                                           "admitted; see Retry-After."},
    413: {"model": ErrorBody, "description": "Request body over the size limit."},
    422: {"model": ErrorBody, "description": "This Idempotency-Key was used with a different request body."},
    429: {"model": ErrorBody, "description": "A quota is used up (`param` names it); see Retry-After."},
    503: {"model": ErrorBody, "description": "Redis or the broker is unavailable, or (code `overloaded`) this "
                                           "gateway is saturated; see Retry-After."},
}
