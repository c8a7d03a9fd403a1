"""uvicorn's HTTP protocol (httptools), with a shutdown that does not wait on idle TLS clients.

On SIGTERM uvicorn closes each idle keep-alive connection and waits, up to the graceful
shutdown's limit (`shutdown_grace_s`), until every connection is gone. Over TLS a closed
transport is only gone once the client has answered the server's close_notify, or after the
event loop's `ssl_shutdown_timeout` (30 s in asyncio and uvloop, not settable through uvicorn).
A client that keeps an idle connection in its pool (the `openai` client, a browser, a proxy)
is not reading it, so never answers: one such client made every stop take 30 s, and with the
default grace of 30 s a Kubernetes pod was killed on the same second. Here an idle connection
over TLS gets `CLOSE_NOTIFY_S` to answer, and is then dropped. Requests in flight are not
touched: uvicorn lets them finish, and their client closes a `connection: close` response.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

CLOSE_NOTIFY_S = 1.0
"""How long an idle TLS client has to answer the server's close_notify at shutdown."""


class ShutdownProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._drop: asyncio.TimerHandle | None = None
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._drop is not None:
            self._drop.cancel()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        super().shutdown()  # closes the transport if no response is under way
        closed = self.transport.is_closing()
        if closed and self.transport.get_extra_info("sslcontext") is not None:
            self._drop = self.loop.call_later(CLOSE_NOTIFY_S, self.transport.abort)
