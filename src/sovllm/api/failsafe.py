"""The last line of defence: every request has an id, and an unexpected exception becomes an
OpenAI-shaped error naming that id, never a bare error page or a silently cut stream.

`RequestGuard` is a plain ASGI middleware, the innermost of the app's own (inside CORS and the
security headers, so its answers carry theirs). It does the work rather than
`@app.exception_handler(Exception)`, because Starlette runs that handler in its
ServerErrorMiddleware, outside every user middleware: its answer gets none of their headers,
and once a response has started it can send nothing at all. Here the response's state is known:

- not started: a 500 `{"error": {...}}` whose message names the request id, which is also its
  `x-request-id` header;
- an event stream (SSE) under way: an error event, then `data: [DONE]`, as for an engine error;
- any other body under way: nothing more can be said; the connection is closed.

Each is logged with its traceback and recorded in the audit log as `request.error`: the
request id, the method, the route's template, the exception's class and what the client got;
never the exception's message, which may quote user data.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable
from typing import Any, Literal

from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sovllm.api.schemas import ErrorBody, ErrorResponse
from sovllm.governance.audit import records

log = logging.getLogger("sovllm.api")

HEADER = b"x-request-id"
_KEY = "request_id"
_DONE = b"data: [DONE]\n\n"
Answered = Literal["http_500", "sse_error", "cut"]


def request_id(scope: Scope) -> str:
    """The request's id: the one a route gave it (`request.state.request_id`), else a new one."""
    state: dict[str, Any] = scope.setdefault("state", {})
    rid = state.get(_KEY)
    if not isinstance(rid, str):
        rid = state[_KEY] = f"req-{uuid.uuid4().hex}"
    return rid


def _body(rid: str) -> ErrorResponse:
    message = f"Internal server error. Quote request id {rid} to the operator."
    return ErrorResponse(
        error=ErrorBody(message=message, type="server_error", code="internal_error")
    )


def error_response(rid: str) -> JSONResponse:
    return JSONResponse(_body(rid).model_dump(), 500, headers={HEADER.decode(): rid})


def report(scope: Scope, exc: Exception, answered: Answered) -> str:
    """Log the exception with its traceback and record it in the audit log; the request id."""
    rid = request_id(scope)
    route = getattr(scope.get("route"), "path", None)  # the template: no ids or names in it
    error = type(exc).__qualname__
    if type(exc).__module__ != "builtins":
        error = f"{type(exc).__module__}.{error}"
    where = f"{scope.get('method')} {scope.get('path')}"
    log.error(
        "unexpected error in %s (request %s), answered %s", where, rid, answered, exc_info=exc
    )
    state = getattr(getattr(scope.get("app"), "state", None), "sovllm", None)
    if state is not None:
        fields = records.request_error(route, scope.get("method"), error, answered)
        try:
            state.audit.append("request.error", fields, rid)
        except Exception:
            log.exception("recording request %s's error in the audit log failed", rid)
    return rid


class RequestGuard:
    """Gives every HTTP request an id (header `x-request-id`) and answers what else escapes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id(scope)
        started = sse = ended = done = gone = False

        async def tracked(message: Message) -> None:
            nonlocal started, sse, ended, done, gone
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower(): value for name, value in headers}
                if HEADER not in names:
                    headers.append((HEADER, request_id(scope).encode()))
                    message["headers"] = headers
                sse = names.get(b"content-type", b"").startswith(b"text/event-stream")
                started = True
            elif message["type"] == "http.response.body":
                done = done or bytes(message.get("body", b"")).endswith(_DONE)
                ended = not message.get("more_body", False)
            try:
                await send(message)
            except OSError:
                gone = True  # ASGI 2.4: the server says the client has left
                raise

        try:
            await self.app(scope, receive, tracked)
        except Exception as raised:
            exc = raised
            if isinstance(raised, ClientDisconnect):
                # The client left (the body's read saw it, or a send failed): no one to answer,
                # and no fault. But Starlette turns any OSError out of a streamed body into
                # ClientDisconnect: one that was not a send's is the app's own.
                if gone or not isinstance(raised.__context__, OSError):
                    return
                exc = raised.__context__
            if not started:
                rid = report(scope, exc, "http_500")
                await _quietly(error_response(rid)(scope, receive, send))
            elif sse and not ended:
                rid = report(scope, exc, "sse_error")
                events = b"" if done else _sse_error(rid) + _DONE
                await _quietly(send({"type": "http.response.body", "body": events}))
            else:
                report(scope, exc, "cut")


def _sse_error(rid: str) -> bytes:
    return f"data: {json.dumps(_body(rid).model_dump())}\n\n".encode()


async def _quietly(sending: Awaitable[None]) -> None:
    """Send the error answer; a client that has gone meanwhile is no further fault."""
    try:
        await sending
    except Exception as exc:
        log.debug("the error answer could not be sent: %r", exc)
