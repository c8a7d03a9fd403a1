"""Where scripts/peers/install.sh put the real peers, and what every peer test checks.

The checks drive a gateway whose replicas are real peers (vLLM, llama-server) through the
official openai client and raw SSE, the same way tests/integration/test_pool.py drives
sovllm's own workers, whose helpers they reuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.conftest import MODEL_ID, Server, wait_until
from tests.integration.test_pool import Outcome, chat_stream, pool, replica, until

PEERS_DIR = Path(os.environ.get("SOVLLM_PEERS_DIR") or Path.home() / ".cache/sovllm/peers")
FORCED = {"ignore_eos": True, "stream_options": {"include_usage": True}}
LONG_PROMPT = "Here is the ward's handbook, chapter one: visiting hours and rules. " * 8


def peer(name: str) -> str:
    """A path from peers.env; a clear failure (never a skip) when the peer is not installed."""
    env = PEERS_DIR / "peers.env"
    values: dict[str, str] = {}
    if env.exists():
        for line in env.read_text().splitlines():
            key, _, value = line.partition("=")
            values[key] = value
    if name not in values:
        pytest.fail(
            f"{name} is not in {env}: install the peers first (`make peers`, or "
            "scripts/peers/install.sh; SOVLLM_PEERS_DIR names another cache folder)"
        )
    return values[name]


def dry_run(tmp: Path, config: Path, env: dict[str, str]) -> list[tuple[dict[str, str], list[str]]]:
    """The command lines `sovllm serve --dry-run` prints: (environment, argv) per replica."""
    done = subprocess.run(
        [sys.executable, "-m", "sovllm", "serve", "--dry-run", "--config", str(config)],
        env={**os.environ, "SOVLLM_DATA_DIR": str(tmp / "dry"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    commands = []
    for line in done.stdout.splitlines():
        if line.startswith("  $ "):
            words = shlex.split(line[4:])
            n = 0  # the leading VAR=value words are the environment
            while "=" in words[n] and not words[n].startswith("-"):
                n += 1
            commands.append((dict(w.split("=", 1) for w in words[:n]), words[n:]))
    return commands


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")


def environ(pid: int) -> dict[str, str]:
    items = Path(f"/proc/{pid}/environ").read_bytes().rstrip(b"\0").decode().split("\0")
    return dict(i.split("=", 1) for i in items if "=" in i)


def stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command's closing parenthesis: state, ppid, pgrp,
    session, …; OSError (or IndexError) when the process has gone."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def session_pids(sid: int) -> list[int]:
    """Live processes in session `sid`: a started replica and every process it spawned."""
    found = []
    for pid in pids():
        try:
            fields = stat(pid)
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(pid)
    return found


def reap(gateway_pid: int) -> None:
    """SIGKILL whatever is left of the replicas a gateway started (a test failed half-way):
    every process that inherited the gateway's pid in the children's environment."""
    for child in pids():
        try:
            started_by = environ(child).get("SOVLLM_PARENT_PID")
        except OSError:
            continue
        if started_by == str(gateway_pid):  # and what it spawned, in its own session
            for pid in [child, *session_pids(child)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def what_they_saw(srv: Server, lines: int = 30) -> str:
    """For a failure's message: the last lines of the gateway's log and of each replica's, and
    which sovllm and vLLM processes are alive. A CI run keeps only its output, and a peer that
    stopped on its own (session 14: vLLM's API server shut down by a SIGTERM from an unknown
    sender) leaves no other trace once the test's clean-up has run."""
    parts = []
    for path in [srv.log, *sorted((srv.data_dir / "logs").glob("replica-*.log"))]:
        try:
            tail = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError as exc:
            tail = [f"({exc})"]
        parts.append(f"--- {path.name}, last lines:\n" + "\n".join(tail))
    alive = []
    for pid in pids():
        with contextlib.suppress(OSError, IndexError, UnicodeDecodeError):
            argv = " ".join(cmdline(pid))
            if "vllm" in argv:  # sovllm's processes too; ppid and session say who started whom
                fields = stat(pid)
                alive.append(f"{pid} ppid {fields[1]} sid {fields[3]}: {argv[:160]}")
    return "\n".join([*parts, "--- sovllm and vLLM processes alive:", *sorted(alive)])


def client(srv: Server) -> OpenAI:
    return OpenAI(base_url=srv.base_url, api_key=srv.api_key, max_retries=0, timeout=300)


def check_chat(srv: Server, replicas: set[str]) -> None:
    """Chat, not streamed and streamed, through the official client; usage and cached_tokens."""
    c = client(srv)
    raw = c.chat.completions.with_raw_response.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=12,
        temperature=0,
    )
    assert raw.headers["x-sovllm-replica"] in replicas
    reply = raw.parse()
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    stream = c.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Count to five"}],
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] in ("stop", "length")
    # The same long prompt twice, pinned to one replica: its prefix is reused the second time.
    usage = []
    for _ in range(2):
        again = c.chat.completions.create(
            model=MODEL_ID,
            messages=[{"role": "user", "content": LONG_PROMPT}],
            max_tokens=4,
            temperature=0,
            extra_headers={"x-session-id": "cached-tokens"},
        )
        assert again.usage is not None and again.usage.prompt_tokens_details is not None
        usage.append(again.usage)
    cached = usage[1].prompt_tokens_details.cached_tokens  # type: ignore[union-attr]
    assert cached is not None and 0 < cached <= usage[1].prompt_tokens, usage


def check_affinity(srv: Server) -> dict[str, set[str]]:
    """Each conversation stays on one replica across its turns; the session header pins too."""

    async def conversations() -> dict[str, set[str]]:
        seen: dict[str, set[str]] = {}
        async with httpx.AsyncClient(timeout=300) as http:
            for turn in range(3):
                for c in range(4):
                    history = [{"role": "user", "content": f"Conversation {c} about cats"}]
                    for t in range(turn):
                        history += [
                            {"role": "assistant", "content": f"Answer {t}"},
                            {"role": "user", "content": f"Question {t + 1}"},
                        ]
                    o = await chat_stream(http, srv, "", 4, messages=history)
                    assert o.finish and o.error is None, o
                    seen.setdefault(f"c{c}", set()).add(o.replica)
            for _ in range(3):
                o = await chat_stream(http, srv, "x", 4, headers={"x-session-id": "s-1"})
                seen.setdefault("session", set()).add(o.replica)
        return seen

    seen = asyncio.run(conversations())
    assert all(len(replicas) == 1 for replicas in seen.values()), seen
    return seen


def check_cut_and_drain(srv: Server) -> None:
    """A cut ends every stream within seconds with finish "stop"; a drain lets one finish."""

    async def cut() -> tuple[list[Outcome], float]:
        async with httpx.AsyncClient(timeout=300) as http:
            started = [asyncio.Event() for _ in range(4)]
            tasks = [
                asyncio.create_task(
                    chat_stream(http, srv, f"Count {i}", 1500, first=started[i], extra=FORCED)
                )
                for i in range(4)
            ]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 300)
            r = await http.post(
                f"{srv.url}/admin/v1/stop",
                headers=srv.auth,
                json={"scope": "all", "mode": "cut", "reason": "peer test"},
            )
            stopped = time.monotonic()
            assert r.status_code == 200, r.text
            return list(await asyncio.gather(*tasks)), stopped

    try:
        outcomes, stopped = asyncio.run(cut())
    finally:
        assert srv.admin("POST", "/resume", json={"scope": "all"}).status_code == 200
    assert all(o.error is None and o.finish == "stop" for o in outcomes), outcomes
    assert max(o.ended for o in outcomes) - stopped < 2.0, outcomes
    assert all(o.completion_tokens is not None and o.completion_tokens < 750 for o in outcomes), (
        outcomes
    )
    # The peers dropped the sequences when the gateway hung up: nothing runs there any more.
    wait_until(lambda: all(r["outstanding"] == 0 for r in pool(srv)["replicas"]), "no flights")
    wait_until(lambda: all(not r["running"] for r in pool(srv)["replicas"]), "idle peers", 60)

    async def drain() -> tuple[Outcome, int]:
        async with httpx.AsyncClient(timeout=300) as http:
            started = asyncio.Event()
            task = asyncio.create_task(
                chat_stream(http, srv, "A poem", 48, first=started, extra=FORCED)
            )
            await asyncio.wait_for(started.wait(), 300)
            r = await http.post(
                f"{srv.url}/admin/v1/stop",
                headers=srv.auth,
                json={"scope": "all", "mode": "drain", "reason": "peer test"},
            )
            assert r.status_code == 200, r.text
            refused = await chat_stream(http, srv, "New", 4)
            return await task, refused.status

    try:
        drained, refused = asyncio.run(drain())
    finally:
        assert srv.admin("POST", "/resume", json={"scope": "all"}).status_code == 200
    assert drained.error is None and drained.finish == "length", drained
    assert drained.completion_tokens == 48
    assert refused == 503


def check_failover_under_load(srv: Server, victim: str, pid: int, streams: int = 8) -> None:
    """SIGKILL one replica's process while every replica streams: no 500, no hang; requests
    that had no token yet, and those that arrive after, are served by the others."""
    # Every replica must be routable when the streams arrive: one the previous test's load
    # left unhealthy for a probe or two would get none of them. In one CI run (stop 27) the
    # wait below never ended; that a replica got no stream is the likely reading, not logged.
    names = [r["name"] for r in pool(srv)["replicas"]]
    wait_until(
        lambda: all(r["state"] == "healthy" for r in pool(srv)["replicas"]), "a healthy pool", 120
    )

    async def run() -> tuple[list[Outcome | BaseException], list[Outcome]]:
        async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=64)) as h:
            # Forced lengths: a stream that met its end of text early could finish before the
            # pool was ever seen with a request on every replica.
            tasks = [
                asyncio.create_task(
                    chat_stream(h, srv, f"Tell a long story {i}", 160, extra=FORCED)
                )
                for i in range(streams)
            ]

            def on_every_replica() -> bool:
                state = pool(srv)["replicas"]
                if all(t.done() for t in tasks):
                    raise AssertionError(("every stream ended before each replica had one", state))
                return min(r["outstanding"] for r in state) > 0

            await until(on_every_replica, f"requests on every replica of {names}", 120)
            os.kill(pid, signal.SIGKILL)
            after = [asyncio.create_task(chat_stream(h, srv, f"After {i}", 8)) for i in range(4)]
            done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 600)
            return list(done), list(await asyncio.gather(*after))

    during, after = asyncio.run(run())
    assert not [o for o in during if isinstance(o, BaseException)], during
    outcomes = [o for o in during if isinstance(o, Outcome)]
    assert all(o.status == 200 for o in outcomes), outcomes
    for o in outcomes:
        # Completed, or ended with a clean SSE error event and [DONE] (checked in chat_stream).
        assert (o.finish == "length" and o.error is None) or (
            o.error is not None and "replica" in o.error
        ), o
    assert all(o.replica == victim for o in outcomes if o.error is not None)
    assert all(o.status == 200 and o.error is None and o.finish for o in after), after
    assert all(o.replica != victim for o in after), after
    wait_until(lambda: replica(srv, victim)["state"] != "healthy", f"{victim} to leave", 30)


def check_sigterm(srv: Server) -> None:
    """SIGTERM to the gateway while a request streams: it finishes, then the gateway exits."""

    async def run() -> Outcome:
        async with httpx.AsyncClient(timeout=300) as http:
            started = asyncio.Event()
            task = asyncio.create_task(chat_stream(http, srv, "Essay", 48, first=started))
            await asyncio.wait_for(started.wait(), 300)
            srv.process.send_signal(signal.SIGTERM)
            return await task

    outcome = asyncio.run(run())
    assert outcome.error is None and outcome.finish in ("stop", "length"), outcome
    # uvicorn re-raises the signal once it has drained: a clean exit by SIGTERM.
    assert srv.process.wait(timeout=120) in (0, -signal.SIGTERM)
    assert "Finished server process" in srv.log.read_text()
