"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}. No stack traces."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sovllm.api import failsafe
from sovllm.api.schemas import ErrorBody, ErrorResponse
from sovllm.engines.base import (
    EngineError,
    EngineUnavailableError,
    InvalidRequestError,
    QueueFullError,
)


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


def from_engine_error(exc: EngineError) -> APIError:
    if isinstance(exc, QueueFullError):
        return APIError(
            429, str(exc), "rate_limit_error", code="queue_full",
            headers={"Retry-After": str(exc.retry_after_s)},
        )  # fmt: skip
    if isinstance(exc, InvalidRequestError):
        code = "context_length_exceeded" if "context length" in str(exc) else None
        return APIError(400, str(exc), param=exc.param, code=code)
    if isinstance(exc, EngineUnavailableError):
        return APIError(503, str(exc), "server_error", code="engine_unavailable")
    return APIError(503, f"the engine failed: {exc}", "server_error", code="engine_error")


_NOT_AN_OBJECT = {"model_attributes_type", "dict_type", "model_type"}


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
        return f"'{param}' is required", param
    return (f"Invalid value for '{param}': {msg}" if param else msg), param


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(EngineError)
    async def _engine_error(request: Request, exc: EngineError) -> JSONResponse:
        return from_engine_error(exc).response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return APIError(400, message, param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return APIError(exc.status_code, str(exc.detail), kind).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # failsafe.RequestGuard answers what the routes raise; only a fault in a middleware
        # outside it comes here (Starlette's ServerErrorMiddleware, which sends this answer
        # if no response has started, then re-raises for the server's log).
        return failsafe.error_response(failsafe.report(request.scope, exc, "http_500"))
