"""The replica pool with real worker processes on loopback: routing, failover, backpressure."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import MODEL_ID, Server, run_server, wait_until

pytestmark = pytest.mark.slow
ONE_THREAD = {"SOVLLM_ENGINE__THREADS": "1"}


@dataclass
class Outcome:
    replica: str
    finish: str | None
    error: str | None
    text: str
    status: int
    ended: float = 0.0
    """time.monotonic() when the stream's end ([DONE]) arrived."""
    completion_tokens: int | None = None
    """From the usage chunk, when the request asked for one (stream_options.include_usage)."""


async def chat_stream(
    client: httpx.AsyncClient, server: Server, content: str, max_tokens: int = 32,
    key: str | None = None, headers: dict[str, str] | None = None,
    messages: list[dict[str, str]] | None = None, first: asyncio.Event | None = None,
    extra: dict[str, Any] | None = None,
) -> Outcome:  # fmt: skip
    """One streamed chat request, read to its end: what came back, and from which replica."""
    body = {
        "model": MODEL_ID,
        "messages": messages or [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        **(extra or {}),
    }
    auth = {"Authorization": f"Bearer {key or server.api_key}", **(headers or {})}
    async with client.stream(
        "POST", f"{server.base_url}/chat/completions", json=body, headers=auth
    ) as r:
        replica = r.headers.get("x-sovllm-replica", "")
        if r.status_code != 200:
            await r.aread()
            return Outcome(replica, None, r.json()["error"]["message"], "", r.status_code)
        finish = error = None
        text = []
        done = False
        completion_tokens = None
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                break
            chunk = json.loads(line[6:])
            if "error" in chunk:
                error = chunk["error"]["message"]
                continue
            if chunk.get("usage"):
                completion_tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk["choices"]:
                text.append(choice["delta"].get("content") or "")
                if first is not None and text[-1]:
                    first.set()
                finish = choice["finish_reason"] or finish
        assert done, "the stream ended without [DONE]"
        ended = time.monotonic()
        return Outcome(replica, finish, error, "".join(text), 200, ended, completion_tokens)


def pool(server: Server) -> dict[str, Any]:
    r = server.admin("GET", "/pool")
    assert r.status_code == 200, r.text
    return dict(r.json())


def replica(server: Server, name: str) -> dict[str, Any]:
    return next(r for r in pool(server)["replicas"] if r["name"] == name)


async def until(predicate: Any, what: str, timeout: float = 60) -> None:
    """Poll the server's state off the event loop, with a deadline (never a fixed sleep)."""
    await asyncio.to_thread(wait_until, predicate, what, timeout)


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with run_server(
        tmp_path_factory.mktemp("pool3"), env=ONE_THREAD, args=("--replicas", "3")
    ) as srv:
        yield srv


def test_three_workers_serve_and_report(three: Server) -> None:
    state = pool(three)
    assert [r["name"] for r in state["replicas"]] == ["worker-0", "worker-1", "worker-2"]
    assert {r["state"] for r in state["replicas"]} == {"healthy"}
    assert all(r["kind"] == "embedded" and r["pid"] for r in state["replicas"])
    models = httpx.get(f"{three.base_url}/models", headers=three.auth).json()["data"]
    assert [m["id"] for m in models] == [MODEL_ID]
    assert len(models[0]["sha256"]) == 64  # the workers' weights fingerprint reaches the client
    # The gateway counts prompt tokens with the workers' own tokenizer: usage agrees.
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Count: un, deux."}],
            "max_tokens": 4, "temperature": 0}  # fmt: skip
    r = httpx.post(f"{three.base_url}/chat/completions", json=body, headers=three.auth, timeout=60)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    rows = three.admin("GET", "/audit/entries", params={"request_id": r.json()["id"]}).json()
    begin = next(e["entry"] for e in rows["data"] if e["entry"]["kind"] == "request.begin")
    assert begin["tokens"]["prompt"] == usage["prompt_tokens"]
    text = httpx.get(f"{three.url}/metrics", headers=three.auth).text
    for name in ("replica_healthy", "replica_num_requests_running", "pool_queue_depth"):
        assert f"sovllm:{name}{{" in text


def test_least_outstanding_spreads_concurrent_requests(three: Server) -> None:
    async def run() -> tuple[list[Outcome], list[int]]:
        async with httpx.AsyncClient(timeout=120) as client:
            started = [asyncio.Event() for _ in range(9)]
            tasks = [
                asyncio.create_task(
                    chat_stream(
                        client,
                        three,
                        f"Story {i}",
                        64,
                        first=started[i],
                        extra={"ignore_eos": True},
                    )
                )
                for i in range(9)
            ]
            for event in started:
                await event.wait()
            spread = [r["outstanding"] for r in pool(three)["replicas"]]  # all nine in flight
            return list(await asyncio.gather(*tasks)), spread

    outcomes, spread = asyncio.run(run())
    assert all(o.finish == "length" for o in outcomes)
    # Nine requests opened at once over three idle replicas: three each.
    assert spread == [3, 3, 3]
    assert Counter(o.replica for o in outcomes) == {"worker-0": 3, "worker-1": 3, "worker-2": 3}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_sigkill_one_of_three_under_50_streams(three: Server) -> None:
    victim = replica(three, "worker-1")
    restarts = victim["restarts"]

    async def run() -> tuple[list[Outcome | BaseException], list[Outcome]]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            tasks = [
                asyncio.create_task(chat_stream(client, three, f"Tell a long story {i}", 96))
                for i in range(50)
            ]
            await until(lambda: min(r["outstanding"] for r in pool(three)["replicas"]) > 0,
                        "requests on every replica")  # fmt: skip
            os.kill(victim["pid"], signal.SIGKILL)
            # Requests arriving right after the kill, while the 50 are still streaming.
            after = [asyncio.create_task(chat_stream(client, three, f"After {i}", 8))
                     for i in range(12)]  # fmt: skip
            # None hangs: every request ends within the client's timeout.
            done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 300)
            return list(done), list(await asyncio.gather(*after))

    during, after = asyncio.run(run())
    assert not [o for o in during if isinstance(o, BaseException)]
    outcomes = [o for o in during if isinstance(o, Outcome)]
    for o in outcomes:
        # Completed, or ended with a clean SSE error event and [DONE] (checked in chat_stream).
        assert (o.finish in ("stop", "length") and o.error is None) or (
            o.error is not None and "replica" in o.error
        ), o
    # Only the killed replica's streams were cut; the others' all completed.
    assert all(o.replica == "worker-1" for o in outcomes if o.error is not None)
    assert {o.replica for o in outcomes if o.error is None} >= {"worker-0", "worker-2"}
    # Requests that arrive after the kill all succeed.
    assert all(o.status == 200 and o.error is None and o.finish for o in after), after
    assert not _pid_alive(victim["pid"])
    # The supervisor restarts it, and it rejoins the pool.
    wait_until(lambda: replica(three, "worker-1")["restarts"] > restarts, "a restart")
    wait_until(lambda: replica(three, "worker-1")["state"] == "healthy", "worker-1 to rejoin")


def test_round_robin_and_affinity(tmp_path: Path) -> None:
    config = tmp_path / "sovllm.yaml"
    config.write_text("routing:\n  policy: prefix_affinity\n")
    with run_server(
        tmp_path, env=ONE_THREAD, args=("--replicas", "2", "--config", str(config))
    ) as srv:

        async def conversations() -> dict[str, set[str]]:
            seen: dict[str, set[str]] = {}
            async with httpx.AsyncClient(timeout=120) as client:
                for turn in range(3):
                    for c in range(4):
                        history = [{"role": "user", "content": f"Conversation {c} about cats"}]
                        for t in range(turn):
                            history += [{"role": "assistant", "content": f"Answer {t}"},
                                        {"role": "user", "content": f"Question {t + 1}"}]  # fmt: skip
                        o = await chat_stream(client, srv, "", 4, messages=history)
                        assert o.finish, o
                        seen.setdefault(f"c{c}", set()).add(o.replica)
                # The session header pins a conversation as well.
                for _ in range(3):
                    o = await chat_stream(client, srv, "x", 4, headers={"x-session-id": "s-1"})
                    seen.setdefault("session", set()).add(o.replica)
            return seen

        seen = asyncio.run(conversations())
        # Each conversation stays on one replica across its turns.
        assert all(len(replicas) == 1 for replicas in seen.values()), seen


def test_pool_answers_429_with_retry_after_when_every_queue_is_full(tmp_path: Path) -> None:
    env = {**ONE_THREAD, "SOVLLM_ENGINE__SLOTS": "1", "SOVLLM_ENGINE__MAX_WAITING": "0"}
    with run_server(tmp_path, env=env, args=("--replicas", "2")) as srv:

        async def run() -> tuple[list[Outcome], Outcome]:
            async with httpx.AsyncClient(timeout=120) as client:
                long = [asyncio.create_task(chat_stream(client, srv, f"Long {i}", 200))
                        for i in range(2)]  # fmt: skip
                await until(lambda: sum(r["outstanding"] for r in pool(srv)["replicas"]) >= 2,
                            "two requests in flight")  # fmt: skip
                body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}],
                        "max_tokens": 4}  # fmt: skip
                r = await client.post(f"{srv.base_url}/chat/completions", json=body,
                                      headers=srv.auth)  # fmt: skip
                refused = Outcome("", None, r.text, "", r.status_code)
                assert int(r.headers["retry-after"]) >= 1
                return list(await asyncio.gather(*long)), refused

        done, refused = asyncio.run(run())
        assert refused.status == 429 and "queue_full" in (refused.error or "")
        assert {o.replica for o in done} == {"worker-0", "worker-1"}


def test_sigterm_drains_in_flight_requests_and_stops_the_workers(tmp_path: Path) -> None:
    with run_server(tmp_path, env=ONE_THREAD, args=("--replicas", "2")) as srv:
        pids = [r["pid"] for r in pool(srv)["replicas"]]

        async def run() -> Outcome:
            async with httpx.AsyncClient(timeout=120) as client:
                task = asyncio.create_task(chat_stream(client, srv, "Write an essay", 160))
                await until(lambda: sum(r["outstanding"] for r in pool(srv)["replicas"]) >= 1,
                            "the request in flight")  # fmt: skip
                srv.process.send_signal(signal.SIGTERM)
                return await task

        outcome = asyncio.run(run())
        assert outcome.error is None and outcome.finish in ("stop", "length")
        # uvicorn re-raises the signal once it has drained: a clean exit by SIGTERM.
        assert srv.process.wait(timeout=60) in (0, -signal.SIGTERM)
        assert "Finished server process" in srv.log.read_text()
        wait_until(lambda: not any(_pid_alive(p) for p in pids), "the workers to stop", 30)


def test_a_queued_request_fails_over_without_the_client_noticing(tmp_path: Path) -> None:
    config = tmp_path / "sovllm.yaml"
    config.write_text("routing:\n  policy: round_robin\n")
    env = {**ONE_THREAD, "SOVLLM_ENGINE__SLOTS": "1"}
    args = ("--replicas", "2", "--config", str(config))
    with run_server(tmp_path, env=env, args=args) as srv:
        victim = replica(srv, "worker-1")

        async def run() -> list[Outcome]:
            async with httpx.AsyncClient(timeout=300) as client:
                tasks = []
                b_streams = asyncio.Event()
                # Round robin: A and C on worker-0, B and D on worker-1, one slot each, so
                # C and D wait in their replica's queue behind A and B.
                for name in "ABCD":
                    first = b_streams if name == "B" else None
                    tasks.append(asyncio.create_task(
                        chat_stream(client, srv, f"Essay {name}", 64, first=first)))  # fmt: skip
                    want = len(tasks)
                    await until(lambda n=want: sum(r["outstanding"] for r in pool(srv)["replicas"]) >= n,
                                f"{want} requests in flight")  # fmt: skip
                await b_streams.wait()
                os.kill(victim["pid"], signal.SIGKILL)
                return list(await asyncio.gather(*tasks))

        a, b, c, d = asyncio.run(run())
        assert (a.replica, b.replica, c.replica, d.replica) == (
            "worker-0", "worker-1", "worker-0", "worker-1")  # fmt: skip
        assert a.error is None and c.error is None
        # B was streaming on the killed replica: a clean error event. D had no token yet: it
        # ran on worker-0 instead and completed, with no error.
        assert b.error is not None and "replica" in b.error
        assert d.error is None and d.finish in ("stop", "length") and d.text


def test_a_cut_ends_streams_on_worker_replicas_and_frees_their_slots(three: Server) -> None:
    # ignore_eos and 1500 tokens: only the cut can end these streams within the test's time.
    forced = {"ignore_eos": True, "stream_options": {"include_usage": True}}

    async def run() -> tuple[list[Outcome], float]:
        async with httpx.AsyncClient(timeout=120) as client:
            started = [asyncio.Event() for _ in range(6)]
            tasks = [
                asyncio.create_task(
                    chat_stream(client, three, f"Count {i}", 1500, first=started[i], extra=forced)
                )
                for i in range(6)
            ]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 120)
            r = await client.post(f"{three.url}/admin/v1/stop", headers=three.auth,
                                  json={"scope": "all", "mode": "cut", "reason": "test"})  # fmt: skip
            stopped = time.monotonic()
            assert r.status_code == 200, r.text
            return list(await asyncio.gather(*tasks)), stopped

    try:
        outcomes, stopped = asyncio.run(run())
    finally:
        three.admin("POST", "/resume", json={"scope": "all"})
    assert all(o.error is None and o.finish == "stop" for o in outcomes), outcomes
    # Every stream ended within a second of the stop, far short of its 1500 tokens.
    assert max(o.ended for o in outcomes) - stopped < 1.0, outcomes
    assert all(o.completion_tokens is not None and o.completion_tokens < 750 for o in outcomes)
    # The workers cancelled the sequences: nothing is left running anywhere.
    wait_until(lambda: all(r["running"] == 0 for r in pool(three)["replicas"]), "idle workers")


def test_a_request_past_its_queue_timeout_is_dropped_before_it_runs(tmp_path: Path) -> None:
    with run_server(tmp_path, env={**ONE_THREAD, "SOVLLM_ENGINE__SLOTS": "1"}) as srv:

        async def run() -> tuple[Outcome, httpx.Response, Outcome]:
            async with httpx.AsyncClient(timeout=120) as client:
                started = asyncio.Event()
                long = asyncio.create_task(chat_stream(client, srv, "Essay", 400, first=started))
                await started.wait()
                hurried = {"x-sovllm-queue-timeout": "0.3"}
                queued = await chat_stream(client, srv, "Quick", 4, headers=hurried)
                body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "x"}]}
                bad = await client.post(f"{srv.base_url}/chat/completions", json=body,
                                        headers={**srv.auth, "x-sovllm-queue-timeout": "soon"})  # fmt: skip
                # It left the queue without running: the long request still holds the slot.
                await asyncio.to_thread(srv.wait_for_metric, "num_requests_waiting", 0)
                assert srv.metric("num_requests_running") == 1
                return queued, bad, await long

        queued, bad, long = asyncio.run(run())
        assert queued.error is not None and "queue timeout" in queued.error and not queued.text
        assert bad.status_code == 400 and "x-sovllm-queue-timeout" in bad.json()["error"]["message"]
        assert long.error is None and long.finish in ("stop", "length")
