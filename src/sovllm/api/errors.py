"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}. No stack traces.

The one place where the request path's domain errors become HTTP answers (`from_domain`):
each layer raises what it decided (no key, a role, a quota, a stop, a prompt that cannot be
checked, a model not served, an engine that failed) and knows nothing of status codes.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sovllm.api import failsafe
from sovllm.api.credentials import bearer, source_of
from sovllm.api.schemas import ErrorBody, ErrorResponse
from sovllm.api.state import app_state
from sovllm.engines.base import (
    EngineError,
    EngineUnavailableError,
    InvalidRequestError,
    QueueFullError,
)
from sovllm.gateway.errors import MaskingFailed, PromptNotCheckable, Stopped
from sovllm.governance import identity, incidents, oversight, review
from sovllm.governance.access import presented_prefix
from sovllm.governance.audit.checkpoint import CheckpointError
from sovllm.governance.identity import AuthError
from sovllm.governance.privacy.erasure import ErasureError
from sovllm.governance.quotas import Forbidden, QuotaExceeded
from sovllm.pool.router import ModelNotServedError


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(message=message, type=type, param=param, code=code)
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(
            ErrorResponse(error=self.body).model_dump(), self.status, headers=self.headers
        )

    def sse_payload(self) -> str:
        return json.dumps(ErrorResponse(error=self.body).model_dump())


def engine_failed(message: str) -> APIError:
    """An engine's error reported in its output stream (the replica failed the request)."""
    return APIError(503, message, "server_error", code="engine_error")


DOMAIN_ERRORS = (
    AuthError,
    Forbidden,
    QuotaExceeded,
    Stopped,
    PromptNotCheckable,
    MaskingFailed,
    EngineError,
    identity.IdentityError,
    oversight.NotServed,
    oversight.NoSuchTenant,
    oversight.NotStopped,
    incidents.IncidentError,
    ErasureError,
    CheckpointError,
    review.NotHoldable,
)


def from_domain(request: Request, exc: Exception) -> APIError:
    """The HTTP answer to a refusal on the request path; 401s and 403s are counted for the
    access log (governance/access.py) as they are answered."""
    if isinstance(exc, AuthError):
        count_refusal(request, 401, exc.reason)
        return APIError(401, str(exc), code="invalid_api_key")
    if isinstance(exc, Forbidden):
        count_refusal(request, 403, "role")
        allowed = ", ".join(sorted(r.value for r in exc.roles))
        message = (
            f"The role '{exc.role.value}' may not use {exc.area} ({request.url.path})."
            if exc.area
            else f"The role '{exc.role.value}' may not use {request.url.path} (allowed: {allowed})."
        )
        return APIError(403, message, "permission_error", code="forbidden")
    if isinstance(exc, QuotaExceeded):
        headers = {"Retry-After": str(exc.retry_after_s), **exc.headers.as_dict()}
        return APIError(429, str(exc), "rate_limit_error", code=exc.code, headers=headers)
    if isinstance(exc, Stopped):
        return APIError(503, str(exc), "service_unavailable", code="service_stopped")
    if isinstance(exc, PromptNotCheckable):
        return APIError(400, str(exc), param="prompt", code="masking_failed")
    if isinstance(exc, MaskingFailed):
        return APIError(503, str(exc), "server_error", code="masking_failed")
    if isinstance(exc, review.NotHoldable):
        return APIError(400, str(exc), param="stream", code="review_hold")
    if isinstance(exc, EngineError):
        return from_engine_error(exc)
    return _admin_refusal(exc)


def _admin_refusal(exc: Exception) -> APIError:
    """The administration's refusals: 404 a tenant, key, model or stop that is not there, 409
    a name taken, a tenant with live keys or an erasure that cannot be done now (nothing was
    erased), 400 anything else the identity rules refuse (a bad name, limit or weight)."""
    if isinstance(exc, (oversight.NotServed, oversight.NoSuchTenant)):
        return APIError(404, str(exc), param="target")
    if isinstance(exc, (identity.NotFound, oversight.NotStopped, incidents.IncidentNotFound)):
        return APIError(404, str(exc))
    if isinstance(
        exc,
        (
            identity.AlreadyExists,
            identity.HasLiveKeys,
            ErasureError,
            CheckpointError,
            incidents.IncidentConflict,
            review.ReviewConflict,
        ),
    ):
        return APIError(409, str(exc))
    if isinstance(exc, (identity.IdentityError, incidents.IncidentError)):
        return APIError(400, str(exc))
    raise TypeError(f"not a domain error: {type(exc).__name__}")


def count_refusal(request: Request, status: int, reason: str) -> None:
    """A 401, 403 or 429 for the access log, by source address and key prefix."""
    guard = app_state(request).access
    prefix = presented_prefix(bearer(request))
    guard.denied(source_of(request), prefix, status, reason, request.url.path)


def from_engine_error(exc: EngineError) -> APIError:
    if isinstance(exc, ModelNotServedError):
        return APIError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, QueueFullError):
        headers = {"Retry-After": str(exc.retry_after_s)}
        return APIError(429, str(exc), "rate_limit_error", code="queue_full", headers=headers)
    if isinstance(exc, InvalidRequestError):
        code = "context_length_exceeded" if "context length" in str(exc) else None
        return APIError(400, str(exc), param=exc.param, code=code)
    if isinstance(exc, EngineUnavailableError):
        return APIError(503, str(exc), "server_error", code="engine_unavailable")
    return engine_failed(f"the engine failed: {exc}")


_NOT_AN_OBJECT = {"model_attributes_type", "dict_type", "model_type"}
_HTTP_CODES = {413: "request_too_large", 408: "request_timeout"}
# What FastAPI's "There was an error parsing the body" was, by its cause.
_UNPARSED: dict[type[BaseException], str] = {
    UnicodeDecodeError: "The request body is not valid UTF-8.",
    RecursionError: "The request body's JSON is nested too deeply.",
}


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    err: dict[str, Any] = exc.errors()[0]
    if err.get("type") == "json_invalid":
        return f"Malformed JSON in the request body: {err.get('ctx', {}).get('error', '')}", None
    if tuple(err.get("loc", ())) == ("body",) and err.get("type") in _NOT_AN_OBJECT:
        return "The request body must be a JSON object (Content-Type: application/json).", None
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    # Drop pydantic's union-member tags ("str", "list[...]") from the location.
    loc = [p for p in loc if not (p[:1].islower() and ("[" in p or p in {"str", "int", "float"}))]
    param = ".".join(loc) or None
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if err.get("type") == "missing":
        if param is None:  # the body itself
            return "The request body is empty: send a JSON object.", None
        return f"'{param}' is required", param
    return (f"Invalid value for '{param}': {msg}" if param else msg), param


def counted(request: Request, error: APIError) -> JSONResponse:
    """The answer, counted in `sovllm:request_errors` (the dashboard's errors, quota refusals
    and stops)."""
    state = getattr(request.app.state, "sovllm", None)
    if state is not None:  # None only before the lifespan has built the state
        state.metrics.observe_error(error.status, error.body.code)
    return error.response()


KEYED_BODIES = frozenset({"/v1/chat/completions", "/v1/completions"})
"""Routes whose body is read only for a caller with a key (openai_routes.KeyPresent)."""


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return counted(request, exc)

    async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
        return counted(request, from_domain(request, exc))

    for kind in DOMAIN_ERRORS:
        app.add_exception_handler(kind, _domain_error)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if request.url.path in KEYED_BODIES:
            # FastAPI parses a JSON body before the route's dependencies run: a client without
            # a usable key is told that first, not what is wrong with its body.
            from sovllm.api.auth import check_key_present  # auth imports this module

            try:
                check_key_present(request)
            except APIError as refused:  # its source is throttled: 429
                return counted(request, refused)
            except AuthError as refused:
                return counted(request, from_domain(request, refused))
        message, param = _validation_message(exc)
        return counted(request, APIError(400, message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        code = _HTTP_CODES.get(exc.status_code)
        # Its headers go with it: a 405's Allow, a 413's Connection: close.
        headers = dict(exc.headers or {})
        cause = exc.__cause__
        message = str(exc.detail) if cause is None else _UNPARSED.get(type(cause), str(exc.detail))
        error = APIError(exc.status_code, message, kind, code=code, headers=headers)
        return counted(request, error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # failsafe.RequestGuard answers what the routes raise; only a fault in a middleware
        # outside it comes here (Starlette's ServerErrorMiddleware, which sends this answer
        # if no response has started, then re-raises for the server's log).
        return failsafe.error_response(failsafe.report(request.scope, exc, "http_500"))
