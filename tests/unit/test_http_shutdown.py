"""serve/http_shutdown.ShutdownProtocol under a real uvicorn over TLS on loopback, on uvloop (what
`sovllm serve` runs) and on asyncio: a stop lets go of a client that keeps its connection
without reading, after an idle connection and after a response the stop let finish, and still
delivers every byte of a finished response to a client that reads slowly."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import uvloop

from sovllm.serve import http_shutdown
from sovllm.serve.http_shutdown import ShutdownProtocol
from sovllm.serve.tls import make_worker_identity

BIG = 8 << 20  # more than the socket buffers hold: the response's end waits in the transport
DEADLINE_S = 60.0
GRACE_S = 10  # far below the loop's 30-s ssl_shutdown_timeout, far above CLOSE_NOTIFY_S


class _Stop:
    """What the test waits on, set from the server's side."""

    def __init__(self) -> None:
        self.begun = asyncio.Event()  # the server's shutdown() ran on a connection
        self.still_sending = threading.Event()  # a drop was put off: bytes still buffered


async def _app(stop: _Stop, scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    head = {"type": "http.response.start", "status": 200, "headers": []}
    await send(head)
    if scope["path"] == "/stream":  # still answering when the stop comes; ends after it
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await stop.begun.wait()
        await send({"type": "http.response.body", "body": b"last"})
    elif scope["path"] == "/big":
        await send({"type": "http.response.body", "body": b"y" * BIG})
    else:
        await send({"type": "http.response.body", "body": b"ok"})


def _protocol(stop: _Stop) -> type[ShutdownProtocol]:
    class Observed(ShutdownProtocol):
        def shutdown(self) -> None:
            super().shutdown()
            stop.begun.set()

        def _drop_if_sent(self) -> None:
            if self.transport.get_write_buffer_size():
                stop.still_sending.set()
            super()._drop_if_sent()

    return Observed


def _read_until(conn: ssl.SSLSocket, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        chunk = conn.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    return data


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


@pytest.fixture(autouse=True)
def _quick_close_notify(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_shutdown, "CLOSE_NOTIFY_S", 0.05)


def _serve_and_stop(
    tmp_path: Path,
    loop: str,
    path: str,
    client: Callable[[ssl.SSLSocket, _Stop], bytes],
    idle: bool = False,
) -> tuple[bytes, list[str]]:
    """Serve over TLS, send one request for `path` on a connection `client` then holds, stop
    the server once the request is in (`idle`: once `client` has read its answer, so the
    connection is idle), and return what the client read and uvicorn's errors."""
    identity = make_worker_identity(tmp_path, "server")  # self-signed, for 127.0.0.1
    stop = _Stop()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        lambda scope, receive, send: _app(stop, scope, receive, send),
        host="127.0.0.1",
        port=port,
        ssl_certfile=str(identity.cert_file),
        ssl_keyfile=str(identity.key_file),
        http=_protocol(stop),
        lifespan="off",
        interface="asgi3",
        log_config=None,
        timeout_graceful_shutdown=GRACE_S,
    )
    server = uvicorn.Server(config)
    errors: list[str] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = lambda record: errors.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("uvicorn.error").addHandler(handler)
    read: list[bytes] = []
    held: list[ssl.SSLSocket] = []
    asked = threading.Event()

    def talk() -> None:
        conn = identity.client_context().wrap_socket(
            socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S),
            server_hostname="127.0.0.1",
        )
        held.append(conn)  # kept open until the server has stopped, as a pool keeps it
        conn.sendall(f"GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n".encode())
        asked.set()
        read.append(client(conn, stop))

    async def main() -> None:
        task = asyncio.create_task(server.serve())
        deadline = asyncio.get_running_loop().time() + DEADLINE_S
        while not server.started:
            if task.done():
                task.result()
            assert asyncio.get_running_loop().time() < deadline, "uvicorn never started"
            await asyncio.sleep(0.01)
        thread = threading.Thread(target=talk, daemon=True)
        thread.start()
        await asyncio.wait_for(asyncio.to_thread(asked.wait, DEADLINE_S), DEADLINE_S)
        state, deadline = server.server_state, asyncio.get_running_loop().time() + DEADLINE_S
        while not (read if idle else (state.tasks or state.total_requests)):
            assert asyncio.get_running_loop().time() < deadline, "the request never came in"
            await asyncio.sleep(0.01)
        server.should_exit = True
        await asyncio.wait_for(task, DEADLINE_S)
        await asyncio.to_thread(thread.join, DEADLINE_S)

    try:
        with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
            runner.run(main())
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
        for conn in held:
            conn.close()
    return (read[0] if read else b""), errors


@pytest.mark.parametrize("loop", LOOPS)
def test_a_stop_lets_go_of_an_idle_pooled_connection(tmp_path: Path, loop: str) -> None:
    def answered_then_silent(conn: ssl.SSLSocket, stop: _Stop) -> bytes:
        return _read_until(conn, b"0\r\n\r\n")  # then never reads again

    data, errors = _serve_and_stop(tmp_path, loop, "/", answered_then_silent, idle=True)
    assert data.endswith(b"2\r\nok\r\n0\r\n\r\n"), data
    # Without the drop, uvicorn waits out its grace for the close_notify and says so.
    assert not [e for e in errors if "graceful shutdown exceeded" in e], errors


@pytest.mark.parametrize("loop", LOOPS)
def test_a_stop_lets_go_of_a_response_it_let_finish(tmp_path: Path, loop: str) -> None:
    def streamed_then_silent(conn: ssl.SSLSocket, stop: _Stop) -> bytes:
        return _read_until(conn, b"0\r\n\r\n")

    data, errors = _serve_and_stop(tmp_path, loop, "/stream", streamed_then_silent)
    assert b"first" in data and data.endswith(b"4\r\nlast\r\n0\r\n\r\n"), data
    assert not [e for e in errors if "graceful shutdown exceeded" in e], errors


@pytest.mark.parametrize("loop", LOOPS)
def test_a_slow_reader_gets_every_byte_of_a_finished_response(tmp_path: Path, loop: str) -> None:
    def slow(conn: ssl.SSLSocket, stop: _Stop) -> bytes:
        data = conn.recv(1024)
        # Read on only once a drop has come due with the response still in the buffer.
        assert stop.still_sending.wait(DEADLINE_S), "no drop came due with bytes buffered"
        return data + _read_until(conn, b"0\r\n\r\n")

    data, errors = _serve_and_stop(tmp_path, loop, "/big", slow)
    assert data.count(b"y") == BIG, (len(data), errors)
