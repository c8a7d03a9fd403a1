"""A gateway whose replica group is discovered from a real DNS server on loopback (dnslib), over
real `sovllm worker` processes on 127.0.0.2-4: the answers change while requests stream, and
nothing fails, the joiner takes traffic, the leaver drains (its streams complete) and leaves;
an address outside the egress allow-list is refused.

The workers speak sovllm's worker protocol, not the OpenAI API, so the group is `kind:
embedded` with `discovery`: attached workers, found by DNS, never started by the gateway.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port, run_server, wait_until, wait_until_up
from tests.integration.test_discovery import NAME, Answers, dns
from tests.integration.test_pool import Outcome, chat_stream, pool, until

pytestmark = pytest.mark.slow
__all__ = ["dns"]  # the DNS server fixture, shared with test_discovery.py
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[int]:
    """Three workers on one port, one per loopback address; yields the port."""
    port = free_port()
    procs = []
    try:
        for host in HOSTS:
            log = tmp_path / f"worker-{host}.log"
            env = {
                **os.environ,
                "SOVLLM_DATA_DIR": str(tmp_path / host),
                "SOVLLM_ENGINE__THREADS": "1",
            }
            argv = [sys.executable, "-m", "sovllm", "worker", "--host", host, "--port", str(port)]
            with log.open("wb") as out:
                procs.append(
                    (subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT), log)
                )
        for (proc, log), host in zip(procs, HOSTS, strict=True):
            wait_until_up(proc, f"http://{host}:{port}/health", log)
        yield port
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def listed(server: Any) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in pool(server)["replicas"]}


def test_answers_change_while_requests_stream(
    tmp_path: Path, dns: tuple[Answers, tuple[str, int]], workers: int
) -> None:
    answers, (ns_host, ns_port) = dns
    leaver, stayer, joiner = (f"group-{host}:{workers}" for host in HOSTS)
    answers.set(HOSTS[0], HOSTS[1], "8.8.8.8")  # a public address: outside egress, refused
    discovery = {"name": NAME, "port": workers, "interval_s": 0.2}
    discovery["nameserver"] = f"{ns_host}:{ns_port}"
    config = tmp_path / "sovllm.yaml"
    group = {"kind": "embedded", "name": "group", "discovery": discovery}
    config.write_text(yaml.safe_dump({"replicas": [group]}))
    with run_server(tmp_path / "gateway", args=("--config", str(config))) as server:
        wait_until(
            lambda: (
                {n for n, r in listed(server).items() if r["state"] == "healthy"}
                == {leaver, stayer}
            ),
            "the two discovered workers to join",
        )

        async def run() -> tuple[list[Outcome], list[Outcome], dict[str, Any]]:
            async with httpx.AsyncClient(timeout=300) as client:
                started = [asyncio.Event() for _ in range(4)]
                long = [
                    asyncio.create_task(
                        chat_stream(
                            client,
                            server,
                            f"Story {i}",
                            300,
                            first=started[i],
                            extra={"ignore_eos": True},
                        )
                    )
                    for i in range(4)
                ]
                for event in started:
                    await asyncio.wait_for(event.wait(), 120)
                answers.set(HOSTS[1], HOSTS[2])  # a scale event: one pod replaced
                await until(
                    lambda: joiner in listed(server) and listed(server)[leaver]["draining"],
                    "the joiner to join and the leaver to drain",
                )
                draining = listed(server)[leaver]
                short = [chat_stream(client, server, f"Quick {i}", 4) for i in range(4)]
                return (
                    list(await asyncio.gather(*long)),
                    list(await asyncio.gather(*short)),
                    draining,
                )

        long, short, draining = asyncio.run(run())
        assert draining["outstanding"] > 0  # streams were in flight on the leaver as it drained
        assert all(o.status == 200 and o.error is None for o in long + short), long + short
        assert all(o.finish == "length" for o in long)  # the leaver's streams ran to the end
        assert {o.replica for o in long} == {leaver, stayer}
        assert leaver not in {o.replica for o in short}  # a draining replica takes no request
        assert joiner in {o.replica for o in short}  # the joiner takes traffic
        wait_until(lambda: leaver not in listed(server), "the drained worker to leave")
        assert set(listed(server)) == {stayer, joiner}
        refusals = [line for line in server.log.read_text().splitlines() if "8.8.8.8" in line]
        assert len(refusals) == 1 and "refused" in refusals[0] and "egress_allow" in refusals[0]
        metrics = httpx.get(f"{server.url}/metrics", headers=server.auth, timeout=30).text
        assert f'replica="{joiner}"' in metrics and f'replica="{leaver}"' not in metrics
