"""Past the slots, requests wait in a bounded queue; past the queue, 429; no engine, 503."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from sovllm.config import load_settings
from sovllm.engines.catalog import resolve_model
from sovllm.engines.llamacpp.engine import LlamaCppEngine
from sovllm.governance.audit import open_audit
from sovllm.governance.bootstrap import bootstrap_admin
from sovllm.serve.app import create_app
from sovllm.serve.build import in_process
from sovllm.store.db import Database, database_url
from sovllm.store.migrate import upgrade
from tests.conftest import MODEL_ID, Server, run_server

LONG = {
    "model": MODEL_ID,
    "messages": [{"role": "user", "content": "Write a very long story."}],
    "max_tokens": 1000,
    "ignore_eos": True,
    "stream": True,
}


@pytest.fixture(scope="module")
def one_slot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"SOVLLM_ENGINE__SLOTS": "1", "SOVLLM_ENGINE__MAX_WAITING": "1"}
    with run_server(tmp_path_factory.mktemp("oneslot"), env) as srv:
        yield srv


async def test_queue_full_is_429_with_retry_after(one_slot_server: Server) -> None:
    srv = one_slot_server
    url = f"{srv.base_url}/chat/completions"
    async with httpx.AsyncClient(timeout=60, headers=srv.auth) as http:

        async def hold(ready: asyncio.Event) -> None:
            async with http.stream("POST", url, json=LONG) as r:
                assert r.status_code == 200
                ready.set()
                async for _ in r.aiter_lines():
                    pass

        first, second = asyncio.Event(), asyncio.Event()
        running = asyncio.create_task(hold(first))
        await asyncio.wait_for(first.wait(), 30)
        queued = asyncio.create_task(hold(second))
        await asyncio.to_thread(srv.wait_for_metric, "num_requests_waiting", 1)
        r = await http.post(url, json={**LONG, "stream": False})
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "queue_full"
        running.cancel()
        queued.cancel()
        await asyncio.gather(running, queued, return_exceptions=True)
    await asyncio.to_thread(srv.wait_for_metric, "num_requests_running", 0)
    await asyncio.to_thread(srv.wait_for_metric, "num_requests_waiting", 0)


def test_a_queued_request_that_disconnects_never_runs(one_slot_server: Server) -> None:
    srv = one_slot_server
    url = f"{srv.base_url}/chat/completions"
    before = srv.metric("prompt_tokens_total")
    with httpx.stream("POST", url, json=LONG, timeout=60, headers=srv.auth) as r:
        # Keep the iterator: dropping it would close the connection (httpcore closes on exit).
        lines = r.iter_lines()
        next(lines)
        with (
            httpx.Client(timeout=60, headers=srv.auth) as other,
            other.stream("POST", url, json=LONG) as q,
        ):
            assert q.status_code == 200
            srv.wait_for_metric("num_requests_waiting", 1)
        srv.wait_for_metric("num_requests_waiting", 0)
        assert srv.metric("num_requests_running") == 1
    srv.wait_for_metric("num_requests_running", 0)
    # Only the first request's prompt was ever processed by the engine.
    assert srv.metric("prompt_tokens_total") - before < 2 * 40


@contextmanager
def inproc_app(data: Path) -> Iterator[tuple[TestClient, LlamaCppEngine]]:
    """The app in this process on the real engine, with a fresh database and an admin key."""
    settings = load_settings(None, data_dir=data)
    db = Database(database_url(None, data))
    upgrade(db)
    key = bootstrap_admin(db)
    engine_settings = settings.engine.model_copy(update={"slots": 2})
    engine = LlamaCppEngine(resolve_model(settings.model), engine_settings)
    pool = in_process(engine, settings)
    with TestClient(create_app(settings, pool, db, open_audit(settings, db))) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        yield client, engine


def test_a_stopped_engine_gives_503_and_not_ready(tmp_path: Path) -> None:
    with inproc_app(tmp_path) as (client, engine):
        body = {**LONG, "stream": False, "max_tokens": 2}
        assert client.post("/v1/chat/completions", json=body).status_code == 200
        engine.shutdown()
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 503
        assert r.json()["error"]["type"] == "server_error"
        assert client.get("/ready").status_code == 503
        assert client.get("/health").status_code == 503


def test_engine_stopping_mid_stream_sends_an_sse_error(tmp_path: Path) -> None:
    with inproc_app(tmp_path) as (client, engine):
        with client.stream("POST", "/v1/chat/completions", json=LONG) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: {")
            engine.shutdown()
            rest = [line for line in lines if line]
        events = [json.loads(x.removeprefix("data: ")) for x in rest if x != "data: [DONE]"]
        assert any("error" in e for e in events)
        assert rest[-1] == "data: [DONE]"
