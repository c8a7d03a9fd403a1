"""The stop switch (AI Act Art. 14(4)(e)): stop and resume a model, a tenant or everything."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import MODEL_ID, Server, run_server, wait_until
from tests.integration.test_pool import Outcome, chat_stream, until


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("stop")) as server:
        yield server


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sovllm", *args],
        env={**os.environ, **(server.env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def status(server: Server, key: str | None = None) -> httpx.Response:
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    auth = {"Authorization": f"Bearer {key or server.api_key}"}
    return httpx.post(f"{server.base_url}/chat/completions", json=body, headers=auth, timeout=60)


def audit_kinds(server: Server) -> list[dict[str, object]]:
    rows = server.admin("GET", "/audit/entries", params={"limit": 1000}).json()["data"]
    return [r["entry"] for r in rows if str(r["entry"]["kind"]).startswith("oversight.")]


def test_cut_ends_streams_with_stop_and_refuses_new_requests(srv: Server) -> None:
    # ignore_eos and 1500 tokens: only the cut can end this stream within the test's time.
    forced = {"ignore_eos": True, "stream_options": {"include_usage": True}}

    async def run() -> tuple[Outcome, httpx.Response, float]:
        async with httpx.AsyncClient(timeout=120) as client:
            body = {"role": "user", "content": "Count to a thousand"}
            started = asyncio.Event()
            task = asyncio.create_task(
                chat_stream(client, srv, "", 1500, messages=[body], first=started, extra=forced)
            )
            await asyncio.wait_for(started.wait(), 120)
            r = await client.post(
                f"{srv.url}/admin/v1/stop",
                headers=srv.auth,
                json={"scope": "model", "target": MODEL_ID, "mode": "cut", "reason": "drill"},
            )
            stopped = time.monotonic()  # the moment the stop call returned
            return await task, r, stopped

    outcome, made, stopped = asyncio.run(run())
    assert made.status_code == 200, made.text
    assert made.json()["mode"] == "cut" and made.json()["actor"]["role"] == "admin"
    # Cut: the stream ends cleanly within a second of the stop, far short of its 1500 tokens,
    # with finish_reason "stop".
    assert outcome.error is None and outcome.finish == "stop"
    assert outcome.ended - stopped < 1.0
    assert outcome.completion_tokens is not None and outcome.completion_tokens < 750
    refused = status(srv)
    assert refused.status_code == 503
    error = refused.json()["error"]
    assert error["code"] == "service_stopped"
    assert f"model '{MODEL_ID}'" in error["message"] and "drill" in error["message"]
    assert srv.admin("GET", "/stops").json()["data"][0]["scope"] == "model"
    r = srv.admin("POST", "/resume", json={"scope": "model", "target": MODEL_ID})
    assert r.status_code == 200, r.text
    assert status(srv).status_code == 200
    kinds = [e["kind"] for e in audit_kinds(srv)]
    assert kinds[:2] == ["oversight.resume", "oversight.stop"]  # newest first


def test_cut_note_reaches_a_non_streamed_answer(srv: Server) -> None:
    async def run() -> httpx.Response:
        async with httpx.AsyncClient(timeout=120) as client:
            body = {
                "model": MODEL_ID,
                "max_tokens": 1500,
                "ignore_eos": True,
                "messages": [{"role": "user", "content": "Count to a thousand"}],
            }
            task = asyncio.create_task(
                client.post(f"{srv.base_url}/chat/completions", json=body, headers=srv.auth)
            )
            await until(lambda: srv.metric("num_requests_running") >= 1, "a running request")
            await client.post(
                f"{srv.url}/admin/v1/stop", headers=srv.auth, json={"scope": "all", "mode": "cut"}
            )
            return await task

    r = asyncio.run(run())
    try:
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["finish_reason"] == "stop"
        assert r.json()["usage"]["completion_tokens"] < 750  # cut, not run to its end
        assert r.json()["sovllm_stop"]["scope"] == "all"
        assert "the whole service" in status(srv).json()["error"]["message"]
    finally:
        assert srv.admin("POST", "/resume", json={"scope": "all"}).status_code == 200


def test_tenant_stop_from_the_cli_drains_and_spares_other_tenants(srv: Server) -> None:
    stopped = srv.create_key("stop-me")
    other = srv.create_key("keep-me")

    async def run() -> Outcome:
        async with httpx.AsyncClient(timeout=120) as client:
            task = asyncio.create_task(
                chat_stream(
                    client, srv, "Write a poem", 600, key=stopped, extra={"ignore_eos": True}
                )
            )
            await until(lambda: srv.metric("num_requests_running") >= 1, "a running request")
            done = await asyncio.to_thread(
                cli, srv, "stop", "--tenant", "stop-me", "--mode", "drain", "--reason", "audit"
            )
            assert done.returncode == 0, done.stderr
            # The stop is in force while the request still runs ...
            await until(lambda: status(srv, stopped).status_code == 503, "the stop to apply")
            assert not task.done()
            return await task

    outcome = asyncio.run(run())
    # ... and a drain lets it finish: all of its 600 tokens.
    assert outcome.error is None and outcome.finish == "length"
    # The running gateway follows the database: the tenant is refused, the other is not.
    assert "tenant 'stop-me'" in status(srv, stopped).json()["error"]["message"]
    assert status(srv, other).status_code == 200
    listed = cli(srv, "stops")
    assert "tenant 'stop-me': drain" in listed.stdout
    stop_entry = audit_kinds(srv)[0]
    assert stop_entry["kind"] == "oversight.stop" and "cli" in stop_entry["actor"]  # type: ignore[operator]
    assert cli(srv, "resume", "--tenant", "stop-me").returncode == 0
    wait_until(lambda: status(srv, stopped).status_code == 200, "the resume to apply")
    again = cli(srv, "resume", "--tenant", "stop-me")
    assert again.returncode == 1 and "is not stopped" in again.stderr


def test_bad_stop_requests_are_refused_with_the_reason(srv: Server) -> None:
    r = srv.admin("POST", "/stop", json={"scope": "tenant"})
    assert r.status_code == 400 and "needs the tenant's name" in r.json()["error"]["message"]
    r = srv.admin("POST", "/stop", json={"scope": "model", "target": "nope"})
    assert r.status_code == 404 and MODEL_ID in r.json()["error"]["message"]
    r = srv.admin("POST", "/stop", json={"scope": "all", "mode": "pause"})
    assert r.status_code == 400
    user = srv.create_key("plain", role="user")
    r = httpx.post(
        f"{srv.url}/admin/v1/stop",
        json={"scope": "all"},
        headers={"Authorization": f"Bearer {user}"},
    )
    assert r.status_code == 403
    assert cli(srv, "stop").returncode == 2
    assert cli(srv, "stop", "--all", "--mode", "later").returncode == 2
    # A mistyped tenant would halt nothing while looking in force: refused, and not recorded.
    r = srv.admin("POST", "/stop", json={"scope": "tenant", "target": "no-such-ward"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "target"
    assert "tenant 'no-such-ward' does not exist" in r.json()["error"]["message"]
    typo = cli(srv, "stop", "--tenant", "no-such-ward")
    assert typo.returncode == 2 and "nothing was stopped: tenant 'no-such-ward'" in typo.stderr
    assert "no-such-ward" not in cli(srv, "stops").stdout
    assert not [e for e in audit_kinds(srv) if "no-such-ward" in str(e)]
    assert status(srv).status_code == 200  # nothing was stopped by any of these
