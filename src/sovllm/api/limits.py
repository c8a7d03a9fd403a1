"""The request body's size limit (`server.max_body_bytes`, sovllm/server_settings.py).

The body is counted while it streams in, before the app has read it all: a declared
`Content-Length` over the limit is refused before a byte of the body is read, and a chunked
body is cut as soon as it passes the limit. Either way the answer is a 413 in OpenAI's shape
with `Connection: close`, so the rest of the body is never read. The headers' size and how
long a request may take to arrive are the HTTP protocol's part (serve/http_limits.py): they are
decided before there is an ASGI request at all.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sovllm.api.errors import APIError, counted

TOO_LARGE = "request_too_large"
CLOSE = {"Connection": "close"}


def too_large(limit: int) -> str:
    return f"The request body is larger than this server accepts ({limit} bytes)."


class BodyLimit:
    """ASGI middleware: refuse a body larger than `max_bytes` (413), counting as it comes."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        # The HTTP parser has refused a Content-Length that is not a number.
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            error = APIError(413, too_large(self.max_bytes), code=TOO_LARGE, headers=CLOSE)
            await counted(Request(scope), error)(scope, receive, send)
            return
        seen = 0

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # An HTTPException: FastAPI's body parsing re-raises it as it is, and
                    # api/errors.py answers it in OpenAI's shape with these headers.
                    raise HTTPException(413, too_large(self.max_bytes), headers=CLOSE)
            return message

        await self.app(scope, counting, send)
