"""Typed errors and the one handler that renders every error as RFC 9457 application/problem+json."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.schemas import FieldError, Problem

log = logging.getLogger(__name__)
PROBLEM_TYPE_BASE = "https://lingudistill.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


class AppError(Exception):
    status: int = 500
    code: str = "internal_error"
    title: str = "Internal server error"

    def __init__(self, detail: str | None = None, *, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.errors = errors

    def headers(self) -> dict[str, str]:
        return {}


class NotFound(AppError):
    status, code, title = 404, "not_found", "Not found"


class JobNotFound(NotFound):
    code, title = "job_not_found", "Job not found"


class DatasetNotFound(NotFound):
    code, title = "dataset_not_found", "Dataset not found"


class CheckpointNotFound(NotFound):
    code, title = "checkpoint_not_found", "Checkpoint not found"


class SweepNotFound(NotFound):
    code, title = "sweep_not_found", "Sweep not found"


class ReportNotReady(NotFound):
    code, title = "report_not_ready", "The report is not ready"


class ModelNotReady(NotFound):
    code, title = "model_not_ready", "The repaired model is not ready"


class KeyNotFound(NotFound):
    code, title = "key_not_found", "API key not found"


class InvalidSpec(AppError):
    status, code, title = 422, "invalid_spec", "The job spec is invalid"


class InvalidSweep(AppError):
    status, code, title = 422, "invalid_sweep", "The sweep is invalid"


class SweepTooLarge(AppError):
    status, code, title = 422, "sweep_too_large", "The sweep has more arms than allowed"


class InvalidDataset(AppError):
    status, code, title = 422, "invalid_dataset", "The dataset upload is invalid"


class InvalidParameter(AppError):
    status, code, title = 422, "invalid_parameter", "A query parameter is invalid"


class UriNotAllowed(AppError):
    status, code, title = 422, "uri_not_allowed", "A URI in the spec is not allowed"


class IdempotencyKeyReused(AppError):
    status, code, title = 422, "idempotency_key_reused", "Idempotency-Key reused with a different request"


class IdempotencyInFlight(AppError):
    status, code, title = 409, "idempotency_in_flight", "A request with this Idempotency-Key is in progress"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}  # a duplicate normally waits for the first request; this is a rare race


class InvalidTransition(AppError):
    status, code, title = 409, "invalid_transition", "The job cannot make this transition"


class CannotRevokeOwnKey(AppError):
    status, code, title = 409, "cannot_revoke_own_key", "A request cannot revoke the key it is authenticated with"


class QuotaExceeded(AppError):
    status, code, title = 429, "quota_exceeded", "Quota exceeded"


class RateLimited(AppError):
    status, code, title = 429, "rate_limited", "Too many requests"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"rate limit exceeded; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class PayloadTooLarge(AppError):
    status, code, title = 413, "payload_too_large", "Request body too large"


class Unauthorized(AppError):
    status, code, title = 401, "unauthorized", "Missing or invalid API key"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(AppError):
    status, code, title = 403, "forbidden", "This key may not do that"


class ServiceUnavailable(AppError):
    status, code, title = 503, "not_ready", "A dependency is unavailable"


class DatabaseUnavailable(AppError):
    """The database cannot be reached (down, restarting, failing over) or is too busy: nothing was changed, and the
    same request is worth repeating shortly. A restarted server is reconnected to on the next request (pre-ping)."""

    status, code, title = 503, "database_unavailable", "The database is unavailable"
    retry_after_s = 5

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


FASTAPI_BODY_PARSE_ERROR = "There was an error parsing the body"
_HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    413: ("payload_too_large", "Request body too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
}


def problem_response(
    request: Request, status: int, code: str, title: str, detail: str | None = None, **extra: Any
) -> JSONResponse:
    errors = extra.pop("errors", None)
    headers = extra.pop("headers", None)
    if request.url.path.startswith(OPENAI_PREFIX):
        return JSONResponse(openai_error(status, code, detail or title, errors), status_code=status, headers=headers)
    problem = Problem(
        type=PROBLEM_TYPE_BASE + code,
        title=title,
        status=status,
        detail=detail,
        instance=request.url.path,
        code=code,
        errors=errors,
    )
    body = problem.model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


OPENAI_PREFIX = "/openai/"  # the OpenAI-compatible facade answers errors in OpenAI's envelope
_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
                 429: "rate_limit_error", 503: "server_error"}  # fmt: skip


def openai_error(status: int, code: str, message: str, errors: list[FieldError] | None = None) -> dict[str, Any]:
    """OpenAI's {"error": {message, type, param, code}}; `param` is the first invalid field, dotted."""
    param = None
    if errors:
        first = errors[0]
        param = ".".join(str(part) for part in first.loc if part not in ("body", "query", "path", "header")) or None
        message = f"{message}: {first.msg}" if first.msg not in message else message
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return problem_response(
        request, exc.status, exc.code, exc.title, exc.detail, errors=exc.errors, headers=exc.headers() or None
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [FieldError(loc=list(e.get("loc", [])), msg=e.get("msg", "")) for e in exc.errors()]
    return problem_response(
        request, 422, "validation_error", "The request is invalid", f"{len(errors)} invalid field(s)", errors=errors
    )


def _is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and (exc.detail == FASTAPI_BODY_PARSE_ERROR or _is_multipart(request)):
        # a body that cannot be parsed at all (bad UTF-8 JSON, broken multipart form data) is an invalid body like
        # bad JSON: 422, as documented (issue 9; Starlette answers a broken multipart body with a bare 400)
        message = "the body is not valid UTF-8 JSON" if exc.detail == FASTAPI_BODY_PARSE_ERROR else str(exc.detail)
        errors = [FieldError(loc=["body"], msg=message)]
        return problem_response(request, 422, "validation_error", "The request is invalid", "1 invalid field(s)",
                                errors=errors)  # fmt: skip
    code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": ", ".join(sorted(_allowed_methods(request)))}
    return problem_response(request, exc.status_code, code, title, detail, headers=headers)


def _allowed_methods(request: Request) -> set[str]:
    """Every method of every route on this path. Starlette's own Allow names only the first route's, and a path
    served by two routes (GET and POST /v1/jobs) then answers a wrong Allow (found by Schemathesis, issue 9)."""
    from starlette.routing import Match

    def walk(routes: list[Any]) -> Any:
        for route in routes:
            if hasattr(route, "original_router"):  # FastAPI keeps included routers nested
                yield from walk(route.original_router.routes)
            else:
                yield route

    methods: set[str] = set()
    for route in walk(request.app.routes):
        if route.matches(request.scope)[0] is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return methods


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    """The database refused a value the request carried (a NUL byte in an id or a filter, a number out of range):
    the caller's input, so a 422 with the database's one-line reason, never a 500. The statement is not shown."""
    reason = str(getattr(exc, "orig", None) or "invalid value").splitlines()[0]
    return problem_response(request, 422, "invalid_value", "A value in the request is not valid", reason)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A lost or refused database connection, a pool exhausted, SQLite's lock wait expired: a 503 the client may
    retry, never a 500. The driver's message stays in the log (it can name hosts)."""
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, str(exc).splitlines()[0])
    error = DatabaseUnavailable("the database cannot be reached right now; retry after the Retry-After seconds")
    return await _app_error(request, error)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(request, 500, "internal_error", "Internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DataError, _data_error)
    for unavailable in (OperationalError, InterfaceError, PoolTimeout):
        app.add_exception_handler(unavailable, _database_unavailable)
    app.add_exception_handler(Exception, _unhandled)


def problem_responses(*statuses: int, public: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries declaring problem+json for each status; authenticated routes (the default)
    also declare 401, 422 (any invalid parameter) and 429; every route may answer 503 (database unavailable)."""
    base = {500, 503} if public else {401, 422, 429, 500, 503}
    descriptions = {
        401: "Missing or invalid API key",
        403: "Forbidden",
        404: "Not found (or another tenant's)",
        409: "Conflict",
        413: "Body too large",
        422: "Invalid request (per-field `errors`)",
        429: "Rate limited (see Retry-After)",
        503: "Unavailable: the database or the broker is down for now (see Retry-After)",
        500: "Internal error",
    }
    return {
        status: {
            "model": Problem,
            "description": descriptions.get(status, "Problem"),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in sorted(base | set(statuses))
    }
