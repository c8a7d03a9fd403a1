"""uvicorn's HTTP protocol (httptools) with the limits an ASGI app cannot enforce.

uvicorn bounds neither the size of a request's headers (llhttp has no limit of its own) nor the
time a request may take to arrive: a client that sends one header byte a second (slow loris)
holds its connection, and a worker's share of them, for ever. Both are decided here, before an
ASGI request exists, from `server.*` (sovllm/server_settings.py):

- line and headers over `max_header_bytes`: 431 in OpenAI's shape, connection closed;
- the line and headers not in within `header_timeout_s` of the request's first byte (or of the
  connection opening): 408, closed; the body not in within `body_timeout_s` of the headers:
  408 if nothing was answered yet, closed (the app sees the client leave);
- any other request the parser refuses: 400 in OpenAI's shape (uvicorn's own is plain text).

The body's size is the API layer's (api/limits.BodyLimit), where a 413 can be counted.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

from sovllm.api.schemas import ErrorBody, ErrorResponse
from sovllm.serve.http_shutdown import ShutdownProtocol
from sovllm.server_settings import ServerSettings

_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
_CODES = {400: "invalid_http_request", 408: "request_timeout", 431: "headers_too_large"}


class HeadersTooLarge(Exception):
    """Raised from the parser's callback; httptools reports it as a parser error."""


def error_bytes(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 response: the error in OpenAI's shape, then the connection closes."""
    body = ErrorResponse(
        error=ErrorBody(message=message, type="invalid_request_error", code=_CODES[status])
    ).model_dump()
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} ".encode()
        + _REASONS[status]
        + b"\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(payload)}\r\n".encode()
        + b"connection: close\r\n\r\n"
    )
    return head + payload


class LimitedProtocol(ShutdownProtocol):
    """uvicorn's HttpToolsProtocol with a header size limit and read deadlines (see the module
    doc), and a shutdown that does not wait on idle TLS clients (http_shutdown.py)."""

    limits: ClassVar[ServerSettings] = ServerSettings()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._headers_too_large = False
        super().connection_made(transport)
        # A connection that never sends a byte is a slow client too.
        self._arm(self.limits.header_timeout_s, "the request's headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, seconds, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, seconds: float, what: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            # The server is still answering on this connection (a stream) and has stopped
            # reading meanwhile (pipelining): the wait is not the client's. Judge it later.
            self._arm(seconds, what)
            return
        message = f"{what} did not arrive within {seconds:g} s."
        self.transport.write(error_bytes(408, message[0].upper() + message[1:]))
        # An app waiting for the body sees the client leave (uvicorn marks the cycle
        # disconnected), as when a client goes: it answers nothing more.
        self.transport.close()

    # Parser callbacks: each request's deadlines, and the size of its line and headers.

    def on_message_begin(self) -> None:
        self._header_bytes = 0
        self._arm(self.limits.header_timeout_s, "the request's headers")
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.limits.max_header_bytes:
            self._headers_too_large = True
            raise HeadersTooLarge

    def on_headers_complete(self) -> None:
        self._arm(self.limits.body_timeout_s, "the request's body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the connection is another protocol's from here
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        self._disarm()
        if self._headers_too_large:
            limit = self.limits.max_header_bytes
            message = f"The request's line and headers are larger than {limit} bytes."
            self.transport.write(error_bytes(431, message))
        else:
            self.transport.write(error_bytes(400, f"{msg.rstrip('.')}: not valid HTTP/1.1."))
        self.transport.close()


def protocol(limits: ServerSettings) -> type[LimitedProtocol]:
    """The protocol class for `uvicorn.Config(http=...)`, with these limits."""
    attrs: dict[str, Any] = {"limits": limits}
    return type("LimitedProtocol", (LimitedProtocol,), attrs)
