"""llama.cpp's own llama-server (built by scripts/peers/install.sh) as `openai` replicas.

Two llama-servers, started here (an `openai` replica is a server the gateway only reaches),
behind prefix-affinity routing: chat, usage and cached tokens, the gateway's gauges,
affinity, the stop switch, SIGKILL of one under load, and SIGTERM of the gateway.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import MODEL_ID, Server, free_port, run_server, wait_until, wait_until_up
from tests.integration.test_pool import Outcome, chat_stream, pool
from tests.peers.peers import (
    FORCED,
    check_affinity,
    check_chat,
    check_cut_and_drain,
    check_failover_under_load,
    check_sigterm,
    peer,
)

pytestmark = [pytest.mark.peers, pytest.mark.slow]
ALIAS = "llama-server-smol"


def start_llama_server(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    # Four slots of 1024 tokens, continuous batching, one thread: the gateway's engine and
    # the other llama-server share the two cores.
    argv = [peer("SOVLLM_PEER_LLAMA_SERVER"), "-m", peer("SOVLLM_PEER_GGUF")]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--alias", ALIAS, "--metrics"]
    argv += ["-np", "4", "-c", "4096", "--cont-batching", "-t", "1"]
    log = tmp / f"llama-server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    wait_until_up(proc, f"http://127.0.0.1:{port}/health", log, 120)
    return proc


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, list[int]]]:
    tmp = tmp_path_factory.mktemp("llama-server")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ports = [free_port(), free_port()]
        procs = [start_llama_server(tmp, p) for p in ports]
        replicas = [
            {
                "kind": "openai",
                "name": f"llama-{i}",
                "url": f"http://127.0.0.1:{p}/v1",
                "model": ALIAS,
                "served_model_name": MODEL_ID,
                "tokenizer": MODEL_ID,
            }
            for i, p in enumerate(ports)
        ]
        config = tmp / "sovllm.yaml"
        routing = {"policy": "prefix_affinity", "probe_interval_s": 1}
        config.write_text(json.dumps({"routing": routing, "replicas": replicas}))
        with run_server(tmp, {"SOVLLM_ENGINE__THREADS": "1"}, ("--config", str(config))) as srv:
            yield srv, [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)


def test_two_llama_servers_join_the_pool(gateway: tuple[Server, list[int]]) -> None:
    srv, _ = gateway
    state = pool(srv)["replicas"]
    assert [(r["name"], r["kind"], r["state"]) for r in state] == [
        ("llama-0", "openai", "healthy"),
        ("llama-1", "openai", "healthy"),
    ]
    models = httpx.get(f"{srv.base_url}/models", headers=srv.auth, timeout=10).json()
    assert [m["id"] for m in models["data"]] == [MODEL_ID]


def test_chat_streamed_and_not_with_usage_and_cached_tokens(
    gateway: tuple[Server, list[int]],
) -> None:
    check_chat(gateway[0], {"llama-0", "llama-1"})


def test_the_pool_counts_what_runs_on_a_llama_server(gateway: tuple[Server, list[int]]) -> None:
    """An `openai` replica reports no gauges of its own: the gateway counts its own flights."""
    srv, _ = gateway

    async def run() -> tuple[Outcome, str, str]:
        async with httpx.AsyncClient(timeout=300) as http:
            started = asyncio.Event()
            task = asyncio.create_task(
                chat_stream(http, srv, "Essay", 120, first=started, extra=FORCED)
            )
            await asyncio.wait_for(started.wait(), 300)
            busy = next(r for r in pool(srv)["replicas"] if r["outstanding"])
            text = httpx.get(f"{srv.url}/metrics", headers=srv.auth, timeout=10).text
            return await task, busy["name"], text

    outcome, busy, text = asyncio.run(run())
    assert outcome.error is None and outcome.completion_tokens == 120
    labels = f'kind="openai",model_name="{MODEL_ID}",replica="{busy}"'
    assert f"sovllm:replica_outstanding_requests{{{labels}}} 1.0" in text, text
    assert f'sovllm:num_requests_running{{model_name="{MODEL_ID}"}} 1.0' in text, text
    wait_until(lambda: srv.metric("num_requests_running") == 0, "the flight to end")


def test_prefix_affinity_across_two_llama_servers(gateway: tuple[Server, list[int]]) -> None:
    check_affinity(gateway[0])


def test_the_stop_switch_cuts_and_drains_llama_server_streams(
    gateway: tuple[Server, list[int]],
) -> None:
    check_cut_and_drain(gateway[0])


def test_sigkill_of_a_llama_server_under_load(gateway: tuple[Server, list[int]]) -> None:
    srv, pids = gateway
    check_failover_under_load(srv, "llama-1", pids[1])


def test_sigterm_drains_the_gateway_in_front_of_llama_server(
    gateway: tuple[Server, list[int]],
) -> None:
    check_sigterm(gateway[0])
