"""One HTTP/1.1 connection of the bench's lean transport (`transport.py`): an asyncio
`Protocol` that fills a buffer from `data_received`, with the waits (for data, for the socket
to drain) that the transport's reader and writer block on, and a request's timeouts."""

from __future__ import annotations

import asyncio

import httpx

READ_HIGH_WATER = 256 * 1024
"""Reading from the socket pauses while this much is buffered and unread."""

Origin = tuple[str, str, int]


class Expired(Exception):
    """A wait's own timer fired (mapped to the httpx timeout of that wait)."""


def expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(Expired())


class Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: a receive buffer filled by the event loop, and the
    futures a reader or a writer waits on."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.drainer: asyncio.Future[None] | None = None
        self.reading_paused = False
        self.writing_paused = False
        self.idle_since = 0.0
        self.requests = 0

    # -- event loop callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > READ_HIGH_WATER and not self.reading_paused:
            assert self.transport is not None
            self.reading_paused = True
            self.transport.pause_reading()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close the transport: a half-closed HTTP/1.1 connection is done

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        drainer = self.drainer
        if drainer is not None and not drainer.done():
            drainer.set_result(None)

    def _wake(self) -> None:
        for fut in (self.waiter, self.drainer):
            if fut is not None and not fut.done():
                fut.set_result(None)

    # -- what the transport calls ---------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.eof or self.transport is None or self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.eof = True

    async def wait_data(self, timeout: float | None, request: httpx.Request) -> None:
        """Wait until more bytes arrived or the peer went away; ReadTimeout after `timeout`."""
        if self.eof:
            return
        if self.reading_paused:
            assert self.transport is not None
            self.reading_paused = False
            self.transport.resume_reading()
        fut = self.loop.create_future()
        self.waiter = fut
        timer = None if timeout is None else self.loop.call_later(timeout, expire, fut)
        try:
            await fut
        except Expired:
            raise httpx.ReadTimeout(f"no data within {timeout:g} s", request=request) from None
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    async def drain(self, timeout: float | None, request: httpx.Request) -> None:
        if not self.writing_paused or self.eof:
            return
        fut = self.loop.create_future()
        self.drainer = fut
        timer = None if timeout is None else self.loop.call_later(timeout, expire, fut)
        try:
            await fut
        except Expired:
            raise httpx.WriteTimeout(
                f"could not write within {timeout:g} s", request=request
            ) from None
        finally:
            self.drainer = None
            if timer is not None:
                timer.cancel()

    def lost(self, request: httpx.Request, what: str) -> httpx.TransportError:
        """The exception for a connection that ended while `what` was still expected."""
        if self.error is not None:
            return httpx.ReadError(f"{what}: {self.error}", request=request)
        return httpx.RemoteProtocolError(what, request=request)


class Timeouts:
    __slots__ = ("connect", "pool", "read", "write")

    def __init__(self, request: httpx.Request) -> None:
        t: dict[str, float | None] = request.extensions.get("timeout") or {}
        self.connect = t.get("connect")
        self.read = t.get("read")
        self.write = t.get("write")
        self.pool = t.get("pool")
