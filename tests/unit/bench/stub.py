"""A tiny OpenAI-compatible HTTP server on loopback that answers at once, for bench tests.

It speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies, chunked responses) over a
raw asyncio protocol, so its own cost stays far below the client's. The `model` of a request
picks a behaviour:

- `stub`: a role-only chunk, `max_tokens` one-token content chunks, a usage chunk, [DONE];
- `stub-crlf`: the same with CRLF line ends, the events split across writes mid-CRLF;
- `stub-no-usage`: the same without the usage chunk;
- `stub-500`, `stub-429`: an OpenAI-shaped error;
- `stub-stream-error`: one content chunk, then an error event;
- `stub-drop`: one content chunk, then the connection closes without [DONE];
- `stub-hold`: one content chunk, then nothing until the client goes away.

For every request it records (perf_counter) when the request's first byte arrived and when it
started writing the response, under the completion id it sent, so a test can subtract the
server's time from the client's. `GET /stub/timings` returns them, for a stub run as its own
process (`python -m tests.unit.bench.stub`, which prints its port).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

MODELS = (
    "stub",
    "stub-crlf",
    "stub-no-usage",
    "stub-500",
    "stub-429",
    "stub-stream-error",
    "stub-drop",
    "stub-hold",
)
TEMPLATE_OVERHEAD = 10


@dataclass
class StubState:
    tokenize: bool = True
    hang_models: bool = False
    timings: dict[str, tuple[float, float]] = field(default_factory=dict)
    requests: int = 0
    holding: int = 0
    counter: int = 0


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(obj: object) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class _Protocol(asyncio.Protocol):
    def __init__(self, state: StubState) -> None:
        self.state = state
        self.buffer = b""
        self.first_byte: float | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.first_byte is None:
            self.first_byte = time.perf_counter()
        self.buffer += data
        while True:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            lines = head.split(b"\r\n")
            method, path, _ = lines[0].decode().split(" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            body, self.buffer = rest[:length], rest[length:]
            arrived = self.first_byte or time.perf_counter()
            self.first_byte = time.perf_counter() if self.buffer else None
            self.handle(method, path, body, arrived)

    def send(self, status: str, payload: bytes, content_type: str = "application/json") -> None:
        assert self.transport is not None
        self.transport.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )

    def handle(self, method: str, path: str, body: bytes, arrived: float) -> None:
        state = self.state
        if method == "GET" and path == "/stub/timings":
            self.send("200 OK", json.dumps(state.timings).encode())
            return
        if method == "GET" and path.endswith("/v1/models"):
            if state.hang_models:
                return
            cards = [{"id": m, "object": "model", "context_length": 4096} for m in MODELS]
            self.send("200 OK", json.dumps({"object": "list", "data": cards}).encode())
            return
        doc = json.loads(body or b"{}")
        if path == "/tokenize":
            if not state.tokenize:
                self.send("404 Not Found", b'{"detail":"Not Found"}')
                return
            words = sum(len(m["content"].split()) for m in doc["messages"])
            self.send("200 OK", json.dumps({"count": TEMPLATE_OVERHEAD + words}).encode())
            return
        if path != "/v1/chat/completions":
            self.send("404 Not Found", b'{"detail":"Not Found"}')
            return
        self.chat(doc, arrived)

    def chat(self, doc: dict[str, Any], arrived: float) -> None:
        state = self.state
        state.requests += 1
        state.counter += 1
        rid = f"chatcmpl-stub-{state.counter}"
        model = str(doc.get("model"))
        words = sum(len(str(m["content"]).split()) for m in doc["messages"])
        n = int(doc.get("max_tokens") or 4)
        if model in ("stub-500", "stub-429"):
            code = "500 Internal Server Error" if model == "stub-500" else "429 Too Many Requests"
            err = {"error": {"message": f"stub says {code}", "type": "server_error"}}
            state.timings[rid] = (arrived, time.perf_counter())
            self.send(code, json.dumps(err).encode())
            return
        if not bool(doc.get("stream")):
            usage = {"prompt_tokens": TEMPLATE_OVERHEAD + words, "completion_tokens": 1}
            answer = {"id": rid, "choices": [{"message": {"content": "x"}}], "usage": usage}
            self.send("200 OK", json.dumps(answer).encode())
            return
        base = {"id": rid, "object": "chat.completion.chunk", "model": model}
        role = base | {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}
        events = [_event(role)]
        content: list[dict[str, Any]] = [
            base | {"choices": [{"index": 0, "delta": {"content": " tok"}, "finish_reason": None}]}
        ]
        if model in ("stub", "stub-crlf", "stub-no-usage"):
            content *= n
            content[-1] = base | {
                "choices": [{"index": 0, "delta": {"content": " end"}, "finish_reason": "length"}]
            }
        events += [_event(c) for c in content]
        if model == "stub-stream-error":
            events.append(_event({"error": {"message": "engine died", "type": "server_error"}}))
        if model in ("stub", "stub-crlf"):
            usage = {"prompt_tokens": TEMPLATE_OVERHEAD + words, "completion_tokens": n}
            events.append(_event(base | {"choices": [], "usage": usage}))
        if model in ("stub", "stub-crlf", "stub-no-usage", "stub-stream-error"):
            events.append(b"data: [DONE]\n\n")
        if model == "stub-crlf":
            crlf = b"".join(events).replace(b"\n", b"\r\n")
            cut = crlf.index(b"\r\n\r\n") + 1  # between the \r and the \n
            events = [crlf[:cut], crlf[cut:]]
        assert self.transport is not None
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        payload = head + b"".join(_chunk(e) for e in events)
        if model == "stub-drop":
            self.transport.write(payload)
            self.transport.close()
            return
        if model == "stub-hold":
            self.transport.write(payload)
            state.holding += 1
            self.closed.add_done_callback(lambda _: setattr(state, "holding", state.holding - 1))
            return
        # Stamped before the write: the client cannot see the answer before this time.
        state.timings[rid] = (arrived, time.perf_counter())
        self.transport.write(payload + b"0\r\n\r\n")


@dataclass
class Stub:
    port: int
    state: StubState

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@contextmanager
def stub_server(tokenize: bool = True, hang_models: bool = False) -> Iterator[Stub]:
    """The stub on a free loopback port, in its own thread and event loop."""
    state = StubState(tokenize=tokenize, hang_models=hang_models)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, object] = {}

    async def start() -> None:
        server = await loop.create_server(lambda: _Protocol(state), "127.0.0.1", 0)
        box["server"] = server
        box["port"] = server.sockets[0].getsockname()[1]
        ready.set()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield Stub(int(box["port"]), state)  # type: ignore[call-overload]
    finally:

        def stop() -> None:
            server = box["server"]
            assert isinstance(server, asyncio.Server)
            server.close()
            loop.stop()

        loop.call_soon_threadsafe(stop)
        thread.join(10)


def main() -> None:
    """Serve until killed; print the port on the first line of stdout."""

    async def serve() -> None:
        state = StubState()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Protocol(state), "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    try:
        import uvloop

        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())


if __name__ == "__main__":
    main()
