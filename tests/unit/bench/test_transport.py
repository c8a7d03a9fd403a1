"""LeanTransport under httpx: framing, keep-alive, limits, timeouts and errors.

The parser is fed byte strings split at every offset (through a connection whose "socket" is
a list of reads), and the whole transport runs against a scripted HTTP/1.1 server on
loopback. Nothing here waits on a clock except the tests of timeouts, which wait for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gzip
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sovllm.bench import http_body, http_conn
from sovllm.bench.client import BenchClient
from sovllm.bench.record import RequestRecord
from sovllm.bench.transport import LeanTransport
from tests.unit.bench.stub import Stub

# -- the parser, fed read by read ----------------------------------------------------------


class _NoSocket:
    def __init__(self) -> None:
        self.closed = False

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Fed(http_conn.Connection):
    """A connection whose reads are the given pieces, then the end of the stream."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        super().__init__(("http", "fed", 80))
        self.transport = _NoSocket()  # type: ignore[assignment]
        self.pieces = iter(pieces)
        self.reads = 0

    async def wait_data(self, timeout: float | None, request: httpx.Request) -> None:
        piece = next(self.pieces, None)
        if piece is None:
            self.connection_lost(None)
        else:
            self.reads += 1
            self.data_received(piece)


REQUEST = httpx.Request("GET", "http://fed/x")
SSE = [b'data: {"n":1}\n\n', b'data: {"n":2}\n\n', b"data: [DONE]\n\n"]
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"%x;ext=1\r\n%s\r\n" % (len(SSE[0]), SSE[0])
    + b"%X\r\n%s\r\n" % (len(SSE[1]), SSE[1])
    + b"%x\r\n%s\r\n" % (len(SSE[2]), SSE[2])
    + b"0\r\nX-Trailer: yes\r\n\r\n"
)


async def read_fed(pieces: list[bytes]) -> tuple[int, list[bytes], LeanTransport, _Fed]:
    pool = LeanTransport()
    conn = _Fed(pieces)
    pool._open.add(conn)
    status, _, _, _, framing, length, keep = await pool._read_head(conn, REQUEST, None)
    body = http_body.Body(pool._release, conn, REQUEST, None, framing, length, keep)
    parts = [part async for part in body]
    return status, parts, pool, conn


def splits(data: bytes) -> Iterable[list[bytes]]:
    """`data` in two reads cut at every offset, then one byte a read."""
    for cut in range(1, len(data)):
        yield [data[:cut], data[cut:]]
    yield [data[i : i + 1] for i in range(len(data))]


async def test_chunked_decoding_at_every_split() -> None:
    for pieces in splits(CHUNKED):
        status, parts, pool, conn = await read_fed(pieces)
        assert status == 200
        assert b"".join(parts) == b"".join(SSE), pieces
        assert all(parts), "no empty parts"
        # Read to its end, framing and trailers included: the connection is kept.
        assert pool.idle_connections == 1 and not conn.buffer


async def test_a_read_yields_what_it_brought_at_once() -> None:
    # The whole response in one read: one piece, not one per chunk.
    _, parts, _, conn = await read_fed([CHUNKED])
    assert parts == [b"".join(SSE)] and conn.reads == 1
    # One chunk a read: each is handed over before the next read.
    head, body = CHUNKED.split(b"\r\n\r\n", 1)
    frames = [head + b"\r\n\r\n"] + [f + b"\r\n" for f in body.split(b"\r\n")[:-1]]
    _, parts, _, _ = await read_fed(frames)
    assert parts == SSE


async def test_content_length_and_close_delimited_bodies() -> None:
    fixed = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world"
    for pieces in splits(fixed):
        _, parts, pool, _ = await read_fed(pieces)
        assert b"".join(parts) == b"hello world" and pool.idle_connections == 1
    until_close = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end"
    for pieces in splits(until_close):
        _, parts, pool, _ = await read_fed(pieces)
        assert b"".join(parts) == b"to the end" and pool.idle_connections == 0


async def test_interim_responses_are_skipped() -> None:
    data = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + CHUNKED
    status, parts, _, _ = await read_fed([data])
    assert status == 200 and b"".join(parts) == b"".join(SSE)


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        (b"", httpx.RemoteProtocolError, "without sending a response"),
        (b"HTTP/1.1 200 OK\r\nContent-", httpx.RemoteProtocolError, "response head"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", httpx.RemoteProtocolError, "malformed status line"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", httpx.RemoteProtocolError, "malformed header"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", httpx.RemoteProtocolError, "Length"),
        (CHUNKED[:-40], httpx.RemoteProtocolError, "incomplete chunked read"),
        (CHUNKED.replace(b"\r\n\r\n", b"\r\n\r\nzz\r\n", 1), httpx.RemoteProtocolError, "size"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
            httpx.RemoteProtocolError,
            "received 5 bytes, expected 9",
        ),
    ],
)
async def test_broken_responses_raise_httpx_errors(
    data: bytes, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words) as caught:
        await read_fed([data] if data else [])
    assert isinstance(caught.value, httpx.TransportError)
    assert caught.value.request is REQUEST


# -- the whole transport against a scripted server ------------------------------------------

Handler = Callable[["Req", asyncio.StreamWriter], Awaitable[bool]]
"""Writes the answer; returns whether the connection stays open."""


@dataclass
class Req:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    reader: asyncio.StreamReader


@dataclass
class Scripted:
    """An HTTP/1.1 server on loopback whose answers are written by handlers, by path."""

    routes: dict[str, Handler]
    connections: int = 0
    requests: list[Req] = field(default_factory=list)
    server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode().split("\r\n")
                method, path, _ = lines[0].split(" ")
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                if headers.get("transfer-encoding") == "chunked":
                    body = b""
                    while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
                        body += (await reader.readexactly(size + 2))[:-2]
                    await reader.readuntil(b"\r\n")
                else:
                    body = await reader.readexactly(int(headers.get("content-length", 0)))
                req = Req(method, path, headers, body, reader)
                self.requests.append(req)
                if not await self.routes[path.partition("?")[0]](req, writer):
                    return
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def scripted(routes: dict[str, Handler]) -> AsyncIterator[Scripted]:
    s = Scripted(routes)
    s.server = await asyncio.start_server(s.serve, "127.0.0.1", 0)
    try:
        yield s
    finally:
        s.server.close()


def answer(data: bytes, keep: bool = True) -> Handler:
    async def handler(req: Req, writer: asyncio.StreamWriter) -> bool:
        writer.write(data)
        await writer.drain()
        return keep

    return handler


def lean(limits: httpx.Limits | None = None, timeout: float = 5.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=LeanTransport(limits), timeout=timeout)


def opened(client: httpx.AsyncClient) -> int:
    t = client._transport
    assert isinstance(t, LeanTransport)
    return t.connections_opened


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"


async def test_keep_alive_reuses_one_connection() -> None:
    async with scripted({"/": answer(OK)}) as server, lean() as client:
        for _ in range(5):
            response = await client.get(server.url + "/")
            assert response.status_code == 200 and response.json() == {}
        assert server.connections == 1 and opened(client) == 1
        assert response.http_version == "HTTP/1.1" and response.reason_phrase == "OK"


async def test_concurrent_requests_open_as_many_connections_then_reuse_them() -> None:
    arrived = 0
    all_in = asyncio.Event()

    async def together(req: Req, writer: asyncio.StreamWriter) -> bool:
        nonlocal arrived
        arrived += 1
        if arrived == 4:
            all_in.set()
        await all_in.wait()  # no answer until all four are in flight
        writer.write(OK)
        return True

    async with scripted({"/": together}) as server, lean() as client:
        await asyncio.gather(*(client.get(server.url + "/") for _ in range(4)))
        assert server.connections == 4
        for _ in range(8):
            await client.get(server.url + "/")
        assert server.connections == 4 and opened(client) == 4


async def test_connection_close_http_1_0_and_expiry_are_not_reused() -> None:
    routes = {
        "/close": answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx"),
        "/http10": answer(b"HTTP/1.0 200 OK\r\n\r\nbody to the end", keep=False),
    }
    async with scripted(routes) as server, lean() as client:
        assert (await client.get(server.url + "/close")).text == "x"
        assert (await client.get(server.url + "/http10")).text == "body to the end"
        assert (await client.get(server.url + "/close")).text == "x"
        assert server.connections == 3
    async with (
        scripted({"/": answer(OK)}) as server,
        lean(httpx.Limits(keepalive_expiry=0)) as client,
    ):
        await client.get(server.url + "/")
        await client.get(server.url + "/")
        assert server.connections == 2


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async with scripted({"/": answer(OK, keep=False)}) as server, lean() as client:
        t = client._transport
        assert isinstance(t, LeanTransport)
        await client.get(server.url + "/")  # keep-alive by its headers, closed after it
        (idle,) = [c for conns in t._idle.values() for c in conns]
        await idle.wait_data(5.0, REQUEST)  # returns at the server's FIN
        assert idle.closed
        assert (await client.get(server.url + "/")).json() == {}
        assert server.connections == 2


async def test_bodies_go_out_whole_fixed_and_streamed() -> None:
    async def echo(req: Req, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(req.body), req.body))
        return True

    async def parts() -> AsyncIterator[bytes]:
        for i in range(3):
            yield b"part %d;" % i

    async with scripted({"/echo": echo}) as server, lean() as client:
        r = await client.post(server.url + "/echo", json={"a": [1, 2]}, headers={"X-K": "v"})
        assert r.json() == {"a": [1, 2]}
        sent = server.requests[-1]
        assert sent.headers["x-k"] == "v" and sent.headers["host"].startswith("127.0.0.1:")
        assert sent.headers["content-type"] == "application/json"
        r = await client.post(server.url + "/echo?q=1", content=parts())
        assert r.content == b"part 0;part 1;part 2;"
        assert server.requests[-1].path == "/echo?q=1"
        assert server.requests[-1].headers["transfer-encoding"] == "chunked"
        assert server.connections == 1


async def test_a_streamed_sse_answer_through_httpx() -> None:
    async with scripted({"/sse": answer(CHUNKED)}) as server, lean() as client:
        for _ in range(2):
            async with client.stream("POST", server.url + "/sse", content=b"{}") as r:
                assert r.headers["content-type"] == "text/event-stream"
                assert b"".join([part async for part in r.aiter_raw()]) == b"".join(SSE)
        assert server.connections == 1


async def test_no_body_answers_and_content_encoding() -> None:
    packed = gzip.compress(b'{"zipped": true}')
    routes = {
        "/head": answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"),
        "/204": answer(b"HTTP/1.1 204 No Content\r\n\r\n"),
        "/gzip": answer(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
            % (len(packed), packed)
        ),
    }
    async with scripted(routes) as server, lean() as client:
        r = await client.head(server.url + "/head")
        assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "100"
        assert (await client.get(server.url + "/204")).status_code == 204
        assert (await client.get(server.url + "/gzip")).json() == {"zipped": True}
        assert server.connections == 1


async def test_the_trace_hook_fires_as_the_request_goes_out() -> None:
    events: list[str] = []

    async def trace(event: str, info: dict[str, Any]) -> None:
        events.append(event)
        assert isinstance(info["request"], httpx.Request)

    async with scripted({"/": answer(OK)}) as server, lean() as client:
        await client.get(server.url + "/", extensions={"trace": trace})
    assert events == ["http11.send_request_headers.started"]


async def test_transport_errors_are_httpx_errors() -> None:
    async def hang_up(req: Req, writer: asyncio.StreamWriter) -> bool:
        return False

    routes = {
        "/hangup": hang_up,
        "/cut": answer(CHUNKED[:-40], keep=False),
        "/junk": answer(b"hello there\r\n\r\n", keep=False),
    }
    async with scripted(routes) as server, lean() as client:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await client.get(server.url + "/hangup")
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            await client.get(server.url + "/cut")
        with pytest.raises(httpx.RemoteProtocolError, match="malformed status line"):
            await client.get(server.url + "/junk")
        t = client._transport
        assert isinstance(t, LeanTransport)
        assert t.open_connections == 0  # every broken connection was closed, none leaked
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening: refused
        async with lean() as client:
            with pytest.raises(httpx.ConnectError, match="connection refused"):
                await client.get(f"http://127.0.0.1:{s.getsockname()[1]}/")
    async with lean() as client:
        with pytest.raises(httpx.UnsupportedProtocol):
            await client.get("ftp://127.0.0.1/")


def _self_signed(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context for 127.0.0.1 and a client context that trusts only it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    client = ssl.create_default_context(cafile=str(tmp / "cert.pem"))
    return server, client


async def test_https(tmp_path: Path) -> None:
    server_ctx, client_ctx = _self_signed(tmp_path)
    s = Scripted({"/sse": answer(CHUNKED)})
    s.server = await asyncio.start_server(s.serve, "127.0.0.1", 0, ssl=server_ctx)
    port = s.server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(transport=LeanTransport(ssl_context=client_ctx)) as client:
            for _ in range(2):
                async with client.stream("GET", f"https://127.0.0.1:{port}/sse") as r:
                    assert b"".join([p async for p in r.aiter_raw()]) == b"".join(SSE)
            assert s.connections == 1
        # The default context does not trust a self-signed certificate.
        async with lean() as client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get(f"https://127.0.0.1:{port}/sse")
    finally:
        s.server.close()


async def test_read_timeout() -> None:
    async def silent(req: Req, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await req.reader.read()  # then nothing, until the client goes away
        return False

    async with (
        scripted({"/": silent}) as server,
        lean(timeout=0.2) as client,
        client.stream("GET", server.url + "/") as r,
    ):
        got = b""
        with pytest.raises(httpx.ReadTimeout):
            async for part in r.aiter_raw():
                got += part
        assert got == b"first"


async def test_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()

    async def never(*args: object, **kwargs: object) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(loop, "create_connection", never)
    async with httpx.AsyncClient(
        transport=LeanTransport(), timeout=httpx.Timeout(5.0, connect=0.1)
    ) as client:
        with pytest.raises(httpx.ConnectTimeout, match=r"within 0\.1 s"):
            await client.get("http://127.0.0.1:9/")


async def test_the_pool_limit_queues_and_times_out() -> None:
    async with scripted({"/": answer(OK), "/sse": answer(CHUNKED)}) as server:
        limits = httpx.Limits(max_connections=1)
        async with (
            httpx.AsyncClient(
                transport=LeanTransport(limits), timeout=httpx.Timeout(5.0, pool=0.1)
            ) as client,
            client.stream("GET", server.url + "/sse"),
        ):
            # The one connection is taken by an unread answer.
            with pytest.raises(httpx.PoolTimeout):
                await client.get(server.url + "/")
        async with lean(limits) as client:
            held = await client.send(client.build_request("GET", server.url + "/sse"), stream=True)
            queued = asyncio.ensure_future(client.get(server.url + "/"))
            await held.aread()  # read to its end: the connection goes to the queued request
            assert (await queued).json() == {}
            assert opened(client) == 1


# -- BenchClient on either transport --------------------------------------------------------


@pytest.mark.parametrize("http", ["lean", "httpx"])
async def test_bench_client_on_either_transport(stub: Stub, http: str) -> None:
    async with BenchClient(stub.base_url, "k", 4, 10.0, http=http) as c:  # type: ignore[arg-type]
        assert c.http == http
        target = await c.discover("stub")
        for i in range(3):
            record = RequestRecord(id=i, scheduled=0.0, output_tokens_target=3)
            await c.stream(
                record, c.body(target, [{"role": "user", "content": "a b"}], 3, True), True
            )
            assert record.status == "ok" and len(record.chunk_times) == 3
            assert record.sent is not None and record.first_token is not None
            assert record.sent <= record.first_token
        if http == "lean":
            assert c.transport is not None and c.transport.connections_opened == 1


def test_the_pool_is_above_the_concurrency_and_proxies_pick_httpx(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    c = BenchClient("http://127.0.0.1:1/v1", None, 100, 10.0)
    assert c.http == "lean" and c.transport is not None
    assert c.transport.max_connections == c.transport.max_keepalive == 116
    c = BenchClient("http://127.0.0.1:1/v1", None, None, 10.0)
    assert c.transport is not None and c.transport.max_connections is None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    assert BenchClient("http://10.1.2.3:8000/v1", None, 4, 10.0).http == "httpx"
    monkeypatch.setenv("NO_PROXY", "10.1.2.3")
    assert BenchClient("http://10.1.2.3:8000/v1", None, 4, 10.0).http == "lean"
