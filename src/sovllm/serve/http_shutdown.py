"""uvicorn's HTTP protocol (httptools), with a stop that does not wait on silent TLS clients.

On SIGTERM uvicorn closes each idle keep-alive connection, lets a response under way finish
and then closes its connection, and waits, up to the graceful shutdown's limit
(`shutdown_grace_s`), until every connection is gone. Over TLS a closed transport is only gone
once the client has answered the server's close_notify, or after the event loop's
`ssl_shutdown_timeout` (30 s in asyncio and uvloop, not settable through uvicorn). A client that
keeps its connection in a pool (the `openai` client, a browser, a proxy, a gateway with its
workers) is not reading it, so never answers: one such client made every stop take 30 s, the
whole default grace, and a pod with Kubernetes' default termination grace (30 s) would be
killed.

Here a TLS connection that the stop has closed, once the last byte of its response has left
the transport's buffer, has `CLOSE_NOTIFY_S` more to answer, and is then dropped. A client
still reading a long response (its bytes still buffered) is waited for, as before.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

CLOSE_NOTIFY_S = 1.0
"""How long a TLS client has, once it has been sent everything, to answer the close_notify."""


class ShutdownProtocol(HttpToolsProtocol):
    """HttpToolsProtocol whose TLS connections a stop lets go of (see the module doc)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._stopping = False
        self._drop: asyncio.TimerHandle | None = None
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._drop is not None:
            self._drop.cancel()
            self._drop = None
        super().connection_lost(exc)

    def shutdown(self) -> None:
        self._stopping = True
        super().shutdown()  # closes an idle connection now, one answering when it has answered
        self._drop_once_closed()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._stopping:  # the response the stop let finish: uvicorn has closed it
            self._drop_once_closed()

    def _drop_once_closed(self) -> None:
        if self._drop is None and self.scheme == "https" and self.transport.is_closing():
            self._drop = self.loop.call_later(CLOSE_NOTIFY_S, self._drop_if_sent)

    def _drop_if_sent(self) -> None:
        # abort() discards what is still buffered: a slow reader of the last response is not
        # a silent client, and the loop's own ssl_shutdown_timeout still bounds the wait.
        if self.transport.get_write_buffer_size():
            self._drop = self.loop.call_later(CLOSE_NOTIFY_S, self._drop_if_sent)
            return
        self._drop = None
        self.transport.abort()
