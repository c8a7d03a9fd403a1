"""An unexpected exception never reaches a client as a bare error page or a silently cut stream.

The real app (`create_app`: its middlewares, routes, governance, SQLite database and audit log)
served by uvicorn on loopback, over an in-process scripted engine. The faults are real
exceptions raised at real seams: the engine's tokenizer, the app's metrics, a middleware, and
two test-only routes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from sovllm.api.state import AppState
from sovllm.config import load_settings
from sovllm.engines.base import GenerationOutput
from sovllm.governance.audit import open_audit
from sovllm.governance.bootstrap import bootstrap_admin
from sovllm.serve.app import create_app
from sovllm.serve.build import in_process
from sovllm.store.db import Database, database_url
from sovllm.store.migrate import upgrade
from tests.conftest import free_port, wait_until
from tests.scripted_engine import MODEL, ScriptedEngine

SECRET = "Mario Rossi, RSSMRA85T10A562S"
"""Stands for user data in an exception's message: it must reach neither client nor audit."""
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}


class OuterFault:
    """A middleware outside the app's own that fails on one path: only Starlette's
    ServerErrorMiddleware (and the app's Exception handler) stands between it and the client."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/test/outer":
            raise RuntimeError(SECRET)
        await self.app(scope, receive, send)


def add_test_routes(app: FastAPI) -> None:
    @app.get("/test/boom")
    async def boom() -> None:
        raise RuntimeError(SECRET)

    async def events() -> AsyncIterator[str]:
        yield 'data: {"n": 1}\n\n'
        raise KeyError(SECRET)

    @app.get("/test/events")
    async def event_stream() -> StreamingResponse:
        return StreamingResponse(events(), media_type="text/event-stream")

    async def text() -> AsyncIterator[str]:
        yield "part one, "
        raise KeyError(SECRET)

    @app.get("/test/text")
    async def text_stream() -> StreamingResponse:
        return StreamingResponse(text(), media_type="text/plain")

    app.add_middleware(OuterFault)


@dataclass
class Served:
    url: str
    key: str
    data: Path
    app: FastAPI

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def entries(self, kind: str) -> list[dict[str, Any]]:
        with sqlite3.connect(self.data / "sovllm.db") as conn:
            bodies = [json.loads(b) for (b,) in conn.execute("SELECT body FROM audit_entries")]
        return [b for b in bodies if b["kind"] == kind]

    def entry(self, kind: str, request_id: str) -> dict[str, Any]:
        """The request's entry of `kind`, once the audit writer has committed it."""
        wait_until(lambda: any(e["request_id"] == request_id for e in self.entries(kind)),
                   f"a {kind} entry for {request_id}", timeout=10)  # fmt: skip
        (found,) = [e for e in self.entries(kind) if e["request_id"] == request_id]
        return found


@contextmanager
def serve(tmp_path: Path, engine: ScriptedEngine) -> Iterator[Served]:
    settings = load_settings(None, data_dir=tmp_path)
    db = Database(database_url(None, tmp_path))
    upgrade(db)
    key = bootstrap_admin(db)
    assert key is not None
    app = create_app(settings, in_process(engine, settings), db, open_audit(settings, db))  # type: ignore[arg-type]
    add_test_routes(app)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, name="uvicorn")
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), "uvicorn to start", 30)
        assert server.started, "uvicorn did not start"
        yield Served(f"http://127.0.0.1:{port}", key, tmp_path, app)
    finally:
        server.should_exit = True
        thread.join(30)
        db.dispose()


def assert_500(r: httpx.Response) -> str:
    """An OpenAI-shaped 500 naming the request id of its header; that id."""
    assert r.status_code == 500, r.text
    assert r.headers["content-type"] == "application/json"
    rid = r.headers["x-request-id"]
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("server_error", "internal_error")
    assert rid in error["message"] and SECRET not in r.text
    return rid


def assert_audited(srv: Served, rid: str, route: str | None, error: str, answered: str) -> None:
    entry = srv.entry("request.error", rid)
    assert (entry["route"], entry["error"], entry["answered"]) == (route, error, answered)
    assert SECRET not in json.dumps(entry)


def test_an_exception_in_a_route_is_an_openai_500_with_its_request_id(tmp_path: Path) -> None:
    with serve(tmp_path, ScriptedEngine()) as srv:
        r = httpx.get(f"{srv.url}/test/boom", timeout=30)
        rid = assert_500(r)
        assert rid.startswith("req-")
        assert r.headers["content-security-policy"]  # it passed the app's own middlewares
        assert_audited(srv, rid, "/test/boom", "RuntimeError", "http_500")
        # Every answer carries a request id, not only the errors.
        assert httpx.get(f"{srv.url}/health").headers["x-request-id"].startswith("req-")


def test_an_exception_on_the_inference_path_names_the_requests_own_id(tmp_path: Path) -> None:
    engine = ScriptedEngine(count_fault=RuntimeError(SECRET))  # the tokenizer fails
    with serve(tmp_path, engine) as srv:
        r = httpx.post(f"{srv.url}/v1/chat/completions", json=CHAT, headers=srv.auth, timeout=30)
        rid = assert_500(r)
        assert rid.startswith("chatcmpl-")
        assert_audited(srv, rid, "/v1/chat/completions", "RuntimeError", "http_500")
        engine.count_fault = None  # the same app serves the next request normally
        ok = httpx.post(f"{srv.url}/v1/chat/completions", json=CHAT, headers=srv.auth)
        assert ok.status_code == 200 and ok.headers["x-request-id"] == ok.json()["id"]


def test_an_exception_in_an_outer_middleware_is_an_openai_500(tmp_path: Path) -> None:
    with serve(tmp_path, ScriptedEngine()) as srv:
        rid = assert_500(httpx.get(f"{srv.url}/test/outer", timeout=30))
        assert_audited(srv, rid, None, "RuntimeError", "http_500")  # no route was reached


def sse(srv: Served, path: str, body: dict[str, Any] | None = None) -> tuple[str, list[str]]:
    """A streamed answer's request id and its `data:` payloads, read to the connection's end."""
    with httpx.Client(timeout=30, headers=srv.auth) as client:
        method = "POST" if body is not None else "GET"
        with client.stream(method, f"{srv.url}{path}", json=body) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
            return r.headers["x-request-id"], lines


def assert_sse_error_then_done(rid: str, lines: list[str]) -> None:
    assert lines[-1] == "[DONE]"
    error = json.loads(lines[-2])["error"]
    assert (error["type"], error["code"]) == ("server_error", "internal_error")
    assert rid in error["message"] and SECRET not in "".join(lines)


def test_an_exception_mid_stream_ends_the_events_with_an_error_and_done(tmp_path: Path) -> None:
    with serve(tmp_path, ScriptedEngine()) as srv:
        rid, lines = sse(srv, "/test/events")
        assert json.loads(lines[0]) == {"n": 1}
        assert_sse_error_then_done(rid, lines)
        assert_audited(srv, rid, "/test/events", "KeyError", "sse_error")


def test_an_exception_mid_completion_stream_is_an_sse_error_and_the_end_says_so(
    tmp_path: Path,
) -> None:
    with serve(tmp_path, ScriptedEngine()) as srv:
        state: AppState = srv.app.state.sovllm
        observe = state.metrics.observe_token
        calls = 0

        def fails_on_the_second(model: str, previous: float | None, out: GenerationOutput) -> None:
            nonlocal calls  # the second call comes after the first token has left
            calls += 1
            if calls == 2:
                raise ZeroDivisionError(SECRET)
            observe(model, previous, out)

        state.metrics.observe_token = fails_on_the_second  # type: ignore[method-assign]
        rid, lines = sse(srv, "/v1/chat/completions", {**CHAT, "stream": True})
        assert rid.startswith("chatcmpl-")
        assert json.loads(lines[0])["choices"][0]["delta"]["content"] == "Hello"
        assert_sse_error_then_done(rid, lines)
        assert_audited(srv, rid, "/v1/chat/completions", "ZeroDivisionError", "sse_error")
        assert srv.entry("request.end", rid)["outcome"] == "error"


def test_a_plain_body_cut_mid_way_is_logged_and_audited(tmp_path: Path) -> None:
    with serve(tmp_path, ScriptedEngine()) as srv:
        with httpx.Client(timeout=30) as client, client.stream("GET", f"{srv.url}/test/text") as r:
            rid = r.headers["x-request-id"]
            # Nothing can be said inside a plain body: the connection is cut, not completed.
            with pytest.raises(httpx.RemoteProtocolError):
                r.read()
        assert_audited(srv, rid, "/test/text", "KeyError", "cut")


def test_a_replica_fault_after_the_first_token_is_an_sse_error_not_a_500(tmp_path: Path) -> None:
    engine = ScriptedEngine(fault=AttributeError(SECRET), fault_at=1)
    with serve(tmp_path, engine) as srv:
        rid, lines = sse(srv, "/v1/chat/completions", {**CHAT, "stream": True})
        assert json.loads(lines[0])["choices"][0]["delta"]["content"] == "Hello"
        assert lines[-1] == "[DONE]"
        error = json.loads(lines[-2])["error"]
        assert error["code"] == "engine_error"
        assert "replica serving this request failed" in error["message"]
        assert "AttributeError" in error["message"] and SECRET not in "".join(lines)
        assert srv.entries("request.error") == []  # the pool's own, clean ending: no fault
        assert srv.entry("request.end", rid)["outcome"] == "error"


def test_a_replica_fault_before_the_first_token_with_no_other_replica_is_503(
    tmp_path: Path,
) -> None:
    engine = ScriptedEngine(fault=OSError("reset"), fault_at=0)
    with serve(tmp_path, engine) as srv:
        r = httpx.post(f"{srv.url}/v1/chat/completions", json=CHAT, headers=srv.auth, timeout=30)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["type"] == "server_error"
        assert srv.entries("request.error") == []
