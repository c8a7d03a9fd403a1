"""A lean HTTP/1.1 transport for httpx: the bench keeps httpx's API, not httpcore's hot path.

Streaming a chat answer from a server that answers at once, one request after another, the
client's CPU per request on the 2-core dev VM was 0.65 ms with httpx's default transport,
0.19 ms with this one, and 0.02 ms for raw asyncio sockets; httpx's own layer (building the
request, auth, redirects, cookies, the Response) is about 0.085 ms of that, measured over an
in-memory transport. Under load httpcore costs more: its pool scans every connection with a
`poll()` on each request, anyio wraps every socket call, h11 runs a state machine per event,
and the body passes through four layers of async generators.

`LeanTransport` replaces the part below httpx: an asyncio `Protocol` per connection that
fills a buffer from `data_received` (`http_conn.py`), and a parser run by the reader: the
response head here, its body in `http_body.py`. This module is the pool and the request. It keeps what the bench
needs and httpx's behaviour for it:

- HTTP/1.1 keep-alive: idle connections are pooled per origin, most recent first; one the
  server closed or that sat idle past `keepalive_expiry` is dropped before reuse;
- `httpx.Limits`: at most `max_connections` open (a request waits for a free one, up to the
  pool timeout), at most `max_keepalive_connections` kept idle;
- responses framed by Content-Length, chunked transfer coding (trailers skipped) or the
  connection's close; a response with `Connection: close`, or an HTTP/1.0 one without
  keep-alive, or one not read to its end, closes its connection;
- the body is yielded as its bytes come off the socket: all the data a read brought, chunk
  framing removed, in one piece, so that nothing waits for a whole chunk;
- timeouts (connect, read, write, pool) from the request, and errors raised as httpx's own
  exceptions (`ConnectError`, `ConnectTimeout`, `ReadTimeout`, `WriteTimeout`, `PoolTimeout`,
  `ReadError`, `RemoteProtocolError`), so code written for httpx handles them unchanged;
- httpcore's `trace` extension, for the one event the bench uses:
  `http11.send_request_headers.started`, fired just before the request is written;
- https through the given `ssl.SSLContext`.

Not supported: proxies (the bench connects directly; `trust_env` proxies do not apply to a
custom transport), HTTP/2, `Upgrade`, Unix sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from sovllm.bench.http_body import Body
from sovllm.bench.http_conn import Connection, Expired, Origin, Timeouts, expire

MAX_HEAD_BYTES = 64 * 1024
"""A response head (status line and headers) longer than this is a protocol error."""
_NO_BODY_STATUS = frozenset((204, 304))


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with a keep-alive pool on asyncio protocols, for `httpx.AsyncClient`."""

    def __init__(
        self,
        limits: httpx.Limits | None = None,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_expiry: float | None = 5.0,
    ) -> None:
        limits = limits or httpx.Limits()
        self.max_connections = limits.max_connections
        self.max_keepalive = limits.max_keepalive_connections
        self.keepalive_expiry = (
            limits.keepalive_expiry if limits.keepalive_expiry is not None else keepalive_expiry
        )
        self._ssl = ssl_context
        self._idle: dict[Origin, list[Connection]] = {}
        self._n_idle = 0
        self._open: set[Connection] = set()
        self._reserved = 0  # connections being opened, counted against max_connections
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self.connections_opened = 0
        """How many connections were ever opened (tests check keep-alive reuse with it)."""

    @property
    def open_connections(self) -> int:
        return len(self._open)

    @property
    def idle_connections(self) -> int:
        return self._n_idle

    # -- the pool -------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        return self._ssl

    async def _acquire(self, origin: Origin, t: Timeouts, request: httpx.Request) -> Connection:
        loop = asyncio.get_running_loop()
        deadline = None if t.pool is None else loop.time() + t.pool
        while True:
            if self._closed:
                raise httpx.ConnectError("the transport is closed", request=request)
            idle = self._idle.get(origin)
            if idle:
                expiry = self.keepalive_expiry
                now = time.monotonic()
                while idle:
                    conn = idle.pop()
                    self._n_idle -= 1
                    if not conn.closed and (expiry is None or now - conn.idle_since < expiry):
                        return conn
                    self._discard(conn)
            limit = self.max_connections
            if limit is None or len(self._open) + self._reserved < limit:
                return await self._connect(origin, t, request)
            if self._n_idle:
                # At the limit with idle connections to other origins: drop one of those.
                self._evict_one()
                continue
            fut = loop.create_future()
            self._waiters.append(fut)
            timer = None if deadline is None else loop.call_at(deadline, expire, fut)
            try:
                await fut
            except Expired:
                raise httpx.PoolTimeout(
                    f"no free connection within {t.pool:g} s ({limit} open)", request=request
                ) from None
            except BaseException:
                self._wake_waiter()  # pass on a wake-up this cancelled wait may have taken
                raise
            finally:
                if timer is not None:
                    timer.cancel()
                if not fut.done():
                    fut.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)

    async def _connect(self, origin: Origin, t: Timeouts, request: httpx.Request) -> Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self._ssl_context() if scheme == "https" else None
        self._reserved += 1
        try:
            async with asyncio.timeout(t.connect):
                _, conn = await loop.create_connection(
                    lambda: Connection(origin),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                )
        except TimeoutError:
            self._wake_waiter()
            raise httpx.ConnectTimeout(
                f"no connection to {host}:{port} within {t.connect:g} s", request=request
            ) from None
        except OSError as exc:
            self._wake_waiter()
            reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else exc
            raise httpx.ConnectError(
                f"cannot connect to {host}:{port}: {reason}", request=request
            ) from None
        except BaseException:
            self._wake_waiter()
            raise
        finally:
            self._reserved -= 1
        self._open.add(conn)
        self.connections_opened += 1
        return conn

    def _release(self, conn: Connection, reusable: bool) -> None:
        if (
            reusable
            and not self._closed
            and not conn.closed
            and not conn.buffer
            and (self.max_keepalive is None or self._n_idle < self.max_keepalive)
        ):
            conn.idle_since = time.monotonic()
            self._idle.setdefault(conn.origin, []).append(conn)
            self._n_idle += 1
        else:
            self._discard(conn)
        self._wake_waiter()

    def _discard(self, conn: Connection) -> None:
        conn.close()
        self._open.discard(conn)

    def _evict_one(self) -> None:
        for idle in self._idle.values():
            if idle:
                self._n_idle -= 1
                self._discard(idle.pop(0))
                return

    def _wake_waiter(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    async def aclose(self) -> None:
        self._closed = True
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
        self._n_idle = 0
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    # -- one request ----------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        port = url.port or (443 if scheme == "https" else 80)
        origin: Origin = (scheme, url.host, port)
        t = Timeouts(request)
        conn = await self._acquire(origin, t, request)
        try:
            conn.requests += 1
            await self._send(conn, request, t)
            status, reason, version, headers, framing, length, keep = await self._read_head(
                conn, request, t.read
            )
        except BaseException:
            self._release(conn, False)
            raise
        if request.headers.get("connection", "").lower() == "close":
            keep = False
        body = Body(self._release, conn, request, t.read, framing, length, keep)
        return httpx.Response(
            status,
            headers=headers,
            stream=body,
            extensions={"http_version": version, "reason_phrase": reason},
        )

    async def _send(self, conn: Connection, request: httpx.Request, t: Timeouts) -> None:
        head = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), request.url.raw_path)]
        for name, value in request.headers.raw:
            head.append(b"%s: %s\r\n" % (name, value))
        head.append(b"\r\n")
        trace: Callable[[str, dict[str, Any]], Awaitable[None]] | None = request.extensions.get(
            "trace"
        )
        if trace is not None:
            await trace("http11.send_request_headers.started", {"request": request})
        try:
            await self._write(conn, request, head, t)
        except OSError as exc:  # a transport may raise on a dead socket instead of reporting it
            raise httpx.WriteError(f"cannot send: {exc}", request=request) from None
        # A connection lost while sending shows when the answer is read: a server may answer
        # (a 413, say) and close before taking the whole body.

    async def _write(
        self, conn: Connection, request: httpx.Request, head: list[bytes], t: Timeouts
    ) -> None:
        transport = conn.transport
        assert transport is not None
        try:
            content: bytes | None = request.content
        except httpx.RequestNotRead:
            content = None
        if content is not None:
            transport.write(b"".join(head) + content)
            await conn.drain(t.write, request)
        else:
            transport.write(b"".join(head))
            chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
            stream = request.stream
            assert isinstance(stream, httpx.AsyncByteStream)
            async for part in stream:
                if not part:
                    continue
                if chunked:
                    part = b"%x\r\n%s\r\n" % (len(part), part)
                transport.write(part)
                await conn.drain(t.write, request)
            if chunked:
                transport.write(b"0\r\n\r\n")
            await conn.drain(t.write, request)

    async def _read_head(
        self, conn: Connection, request: httpx.Request, timeout: float | None
    ) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]], str, int, bool]:
        buf = conn.buffer
        while True:
            scanned = 0
            while True:
                end = buf.find(b"\r\n\r\n", max(0, scanned - 3))
                if end >= 0:
                    break
                if len(buf) > MAX_HEAD_BYTES:
                    raise httpx.RemoteProtocolError("response head too long", request=request)
                scanned = len(buf)
                if conn.eof:
                    what = (
                        "Server disconnected without sending a response."
                        if not buf
                        else "peer closed connection in the middle of the response head"
                    )
                    raise conn.lost(request, what)
                await conn.wait_data(timeout, request)
            lines = bytes(buf[:end]).split(b"\r\n")
            del buf[: end + 4]
            version, _, rest = lines[0].partition(b" ")
            code, _, reason = rest.partition(b" ")
            if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
                raise httpx.RemoteProtocolError(
                    f"malformed status line {lines[0][:80]!r}", request=request
                )
            status = int(code)
            if 100 <= status < 200 and status != 101:
                continue  # an interim response (100 Continue, 103 Early Hints): the real one follows
            break
        headers: list[tuple[bytes, bytes]] = []
        framing = "close"
        length = 0
        keep = version == b"HTTP/1.1"
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name[-1:] in (b" ", b"\t"):
                raise httpx.RemoteProtocolError(
                    f"malformed header line {line[:80]!r}", request=request
                )
            value = value.strip()
            headers.append((name, value))
            lname = name.lower()
            if lname == b"transfer-encoding":
                if value.lower().endswith(b"chunked"):
                    framing = "chunked"
            elif lname == b"content-length":
                if framing != "chunked":
                    try:
                        length = int(value)
                    except ValueError:
                        raise httpx.RemoteProtocolError(
                            f"bad Content-Length {value[:40]!r}", request=request
                        ) from None
                    if length < 0:
                        raise httpx.RemoteProtocolError("negative Content-Length", request=request)
                    framing = "length"
            elif lname == b"connection":
                tokens = value.lower()
                if b"close" in tokens:
                    keep = False
                elif b"keep-alive" in tokens:
                    keep = True
        if status == 101:
            keep = False  # the connection now speaks another protocol
        elif request.method == "HEAD" or status in _NO_BODY_STATUS:
            framing, length = "length", 0
        elif framing == "close":
            keep = False
        return status, reason, version, headers, framing, length, keep
