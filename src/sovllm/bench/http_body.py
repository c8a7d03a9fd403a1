"""A response body of the bench's lean transport (`transport.py`), read off its connection as
its bytes arrive: framed by Content-Length, chunked transfer coding, or the connection's close."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx

from sovllm.bench.http_conn import Connection

Release = Callable[[Connection, bool], None]
"""Hands a connection back to its pool: reusable, or to be closed."""


class Body(httpx.AsyncByteStream):
    """A response body read off its connection; the connection goes back to the pool when the
    body was read to its end (or closes, when it was not)."""

    def __init__(
        self,
        release: Release,
        conn: Connection,
        request: httpx.Request,
        timeout: float | None,
        framing: str,
        length: int,
        keep: bool,
    ) -> None:
        self.release = release
        self.conn: Connection | None = conn
        self.request = request
        self.timeout = timeout
        self.framing = framing
        self.length = length
        self.keep = keep
        self.complete = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self.conn
        if conn is None:
            raise httpx.StreamClosed()
        try:
            if self.framing == "length":
                parts = self._fixed(conn)
            elif self.framing == "chunked":
                parts = self._chunked(conn)
            else:
                parts = self._until_close(conn)
            async for part in parts:
                yield part
            self.complete = True
        finally:
            await self.aclose()

    async def _fixed(self, conn: Connection) -> AsyncIterator[bytes]:
        remaining = self.length
        buf = conn.buffer
        while remaining:
            if not buf:
                if conn.eof:
                    raise conn.lost(
                        self.request,
                        "peer closed connection without sending complete message body "
                        f"(received {self.length - remaining} bytes, expected {self.length})",
                    )
                await conn.wait_data(self.timeout, self.request)
                continue
            take = min(remaining, len(buf))
            part = bytes(buf[:take])
            del buf[:take]
            remaining -= take
            yield part

    async def _until_close(self, conn: Connection) -> AsyncIterator[bytes]:
        buf = conn.buffer
        while True:
            if buf:
                part = bytes(buf)
                buf.clear()
                yield part
            elif conn.eof:
                if conn.error is not None:
                    raise httpx.ReadError(str(conn.error), request=self.request)
                return
            else:
                await conn.wait_data(self.timeout, self.request)

    async def _chunked(self, conn: Connection) -> AsyncIterator[bytes]:
        """Chunked transfer coding, decoded as far as the buffer goes; each pass yields the
        data of every complete or partial chunk that has arrived, joined."""
        buf = conn.buffer
        remaining = 0  # data bytes left in the current chunk
        crlf = False  # the current chunk's data is read; its CRLF is not
        out: list[bytes] = []
        while True:
            pos = 0
            n = len(buf)
            last = False
            while pos < n:
                if remaining:
                    take = min(remaining, n - pos)
                    out.append(bytes(buf[pos : pos + take]))
                    pos += take
                    remaining -= take
                    crlf = remaining == 0
                elif crlf:
                    if n - pos < 2:
                        break
                    if buf[pos : pos + 2] != b"\r\n":
                        raise httpx.RemoteProtocolError(
                            "chunk not followed by CRLF", request=self.request
                        )
                    pos += 2
                    crlf = False
                else:
                    eol = buf.find(b"\r\n", pos)
                    if eol < 0:
                        if n - pos > 1024:
                            raise httpx.RemoteProtocolError(
                                "chunk size line too long", request=self.request
                            )
                        break
                    size_field = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
                    try:
                        size = int(size_field, 16)
                    except ValueError:
                        raise httpx.RemoteProtocolError(
                            f"bad chunk size {size_field[:20]!r}", request=self.request
                        ) from None
                    if size < 0 or size_field[:1] in (b"-", b"+"):
                        raise httpx.RemoteProtocolError("bad chunk size", request=self.request)
                    if size == 0:
                        # The last chunk: trailers (ignored) up to an empty line.
                        end = buf.find(b"\r\n\r\n", eol)
                        if end < 0:
                            break
                        pos = end + 4
                        last = True
                        break
                    pos = eol + 2
                    remaining = size
            if pos:
                del buf[:pos]
            if out:
                yield out[0] if len(out) == 1 else b"".join(out)
                out = []
            if last:
                return
            if pos:
                continue  # more may have come in while the reader had the data
            if conn.eof:
                raise conn.lost(
                    self.request,
                    "peer closed connection without sending complete message body "
                    "(incomplete chunked read)",
                )
            await conn.wait_data(self.timeout, self.request)

    async def aclose(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            self.release(conn, self.keep and self.complete)
