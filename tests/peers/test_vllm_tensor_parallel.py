"""A real vLLM replica with tensor parallelism (TP=3 over gloo, on CPU), started by sovllm.

SmolLM2-135M has 9 attention heads: vLLM refuses TP=2 and accepts TP=3, three workers on the
two cores (VLLM_CPU_OMP_THREADS_BIND gives each its core). It takes about four minutes to
start and is slow, so one test covers it: the command line, readiness, chat, vLLM's gauges in
the pool, a client's disconnect letting go of the replica, and SIGTERM stopping every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import httpx
import pytest

from tests.conftest import MODEL_ID, Server, free_port, run_server, wait_until
from tests.integration.test_pool import chat_stream, pool, until
from tests.peers.peers import FORCED, client, cmdline, reap, session_pids, what_they_saw
from tests.peers.test_vllm_replica import (
    ENV,
    START_S,
    Gateway,
    check_what_runs,
    vllm_replica,
    write_config,
)

pytestmark = [
    pytest.mark.peers,
    pytest.mark.slow,
    pytest.mark.tensor_parallel,
    pytest.mark.timeout(START_S + 600),  # as in test_vllm_replica.py
]
TP_ENV = {**ENV, "VLLM_CPU_OMP_THREADS_BIND": "0|1|0"}


def test_a_tensor_parallel_vllm_replica(tmp_path: Path) -> None:
    # Three workers spinning on two cores leave vLLM's API server seconds between time
    # slices: a 1 s probe times out often, and the pool keeps its last (idle) reading.
    config = write_config(tmp_path, [vllm_replica(free_port(), tp=3)], probe_timeout_s=10)
    gateway: list[int] = []
    try:
        with run_server(tmp_path, TP_ENV, ("--config", str(config)), START_S + 60) as srv:
            gateway.append(srv.process.pid)
            check_tensor_parallel_replica(srv, Gateway(srv, config, tmp_path))
    finally:
        for pid in gateway:
            reap(pid)


def check_tensor_parallel_replica(srv: Server, gw: Gateway) -> None:
    check_what_runs(gw, ["vllm-0"])
    pid = pool(srv)["replicas"][0]["pid"]
    argv = cmdline(pid)
    assert argv[argv.index("--tensor-parallel-size") + 1] == "3"
    # Three tensor-parallel workers beside the API server and its engine core.
    assert len(session_pids(pid)) >= 4, session_pids(pid)
    reply = client(srv).chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=8,
        temperature=0,
    )
    assert reply.choices[0].message.content and reply.usage is not None

    async def run() -> None:
        async with httpx.AsyncClient(timeout=300) as http:
            started = asyncio.Event()
            # Far longer than the check needs (three workers on two cores decode a few tokens a
            # second, and a probe can take seconds): a short stream could end before any probe
            # saw it, as it once did in CI. Once vLLM's gauge shows it, the client goes away.
            task = asyncio.create_task(
                chat_stream(http, srv, "Essay", 1200, first=started, extra=FORCED)
            )
            await asyncio.wait_for(started.wait(), 300)
            await until(lambda: running() == 1 or task.done(), "running", 120)
            if task.done():
                raise AssertionError(
                    f"the stream ended before vLLM reported it: {task.result()}\n"
                    + what_they_saw(srv)
                )
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def running() -> int | None:
        """vLLM's gauge as the pool last scraped it; None while a probe has not read one
        (three workers on two cores can make a probe time out)."""
        value = pool(srv)["replicas"][0]["running"]
        return None if value is None else int(value)

    asyncio.run(run())
    # The client's disconnect reached the gateway, which let go of the replica. That vLLM then
    # stops the request is not asserted: in one CI run (session 13) vLLM still ran it two
    # minutes after the gateway had ended it as aborted, with three workers on two cores; why
    # is open (issue #15's note).
    wait_until(lambda: pool(srv)["replicas"][0]["outstanding"] == 0, "the gateway to let go", 60)
    srv.process.send_signal(signal.SIGTERM)
    assert srv.process.wait(timeout=120) in (0, -signal.SIGTERM)
    wait_until(lambda: not session_pids(pid), "every vLLM process to end", 60)
