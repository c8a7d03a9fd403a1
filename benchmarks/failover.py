"""How fast the pool reacts: a killed replica leaving, a restart, a stop's cut.

Starts `sovllm serve --replicas 3` (one thread each), then measures, from the gateway's side:

- leave: SIGKILL of a worker with streams in flight → the pool marks it unhealthy
  (target: within 2 s);
- rejoin: the supervisor's restart → healthy again;
- cut: `POST /admin/v1/stop` with mode `cut` → the last of 12 running streams has ended
  (target: within 1 s).

    .venv/bin/python benchmarks/failover.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import MODEL_ID, Server, run_server, wait_until_async


def replicas(srv: Server) -> list[dict[str, Any]]:
    return list(srv.admin("GET", "/pool").json()["replicas"])


def state(srv: Server, name: str) -> str:
    return str(next(r["state"] for r in replicas(srv) if r["name"] == name))


async def stream(client: httpx.AsyncClient, srv: Server, started: asyncio.Event) -> float:
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Count to 1000"}],
            "max_tokens": 1500, "ignore_eos": True, "stream": True}  # fmt: skip
    async with client.stream("POST", f"{srv.base_url}/chat/completions", json=body,
                             headers=srv.auth) as r:  # fmt: skip
        async for line in r.aiter_lines():
            if '"content"' in line:
                started.set()
    return time.perf_counter()


async def streaming(events: list[asyncio.Event]) -> None:
    """Every stream has sent text, within a deadline (a failed stream never would)."""
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 120)
    except TimeoutError:
        sys.exit("not every stream sent text within 120 s")


async def measure_cut(srv: Server, n: int) -> float:
    async with httpx.AsyncClient(timeout=120) as client:
        events = [asyncio.Event() for _ in range(n)]
        tasks = [asyncio.create_task(stream(client, srv, e)) for e in events]
        await streaming(events)
        t0 = time.perf_counter()
        await client.post(f"{srv.url}/admin/v1/stop", headers=srv.auth,
                          json={"scope": "all", "mode": "cut"})  # fmt: skip
        ends = await asyncio.gather(*tasks)
        await client.post(f"{srv.url}/admin/v1/resume", headers=srv.auth, json={"scope": "all"})
        return max(ends) - t0


async def measure_kill(srv: Server, name: str) -> tuple[float, float]:
    async with httpx.AsyncClient(timeout=120) as client:
        events = [asyncio.Event() for _ in range(6)]
        tasks = [asyncio.create_task(stream(client, srv, e)) for e in events]
        await streaming(events)
        pid = next(r["pid"] for r in replicas(srv) if r["name"] == name)
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        # Deadlines far above the targets (2 s to leave; restart + model load to come back).
        await wait_until_async(lambda: state(srv, name) != "healthy", f"{name} to leave", 30)
        left = time.perf_counter() - t0
        await wait_until_async(
            lambda: state(srv, name) == "healthy", f"{name} to be healthy again", 180, 0.05
        )
        back = time.perf_counter() - t0
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return left, back


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    env = {"SOVLLM_ENGINE__THREADS": "1"}
    with (
        tempfile.TemporaryDirectory() as tmp,
        run_server(Path(tmp), env=env, args=("--replicas", "3")) as srv,
    ):
        cuts, leaves, backs = [], [], []
        for i in range(args.repeat):
            cuts.append(asyncio.run(measure_cut(srv, 12)))
            left, back = asyncio.run(measure_kill(srv, f"worker-{i % 3}"))
            leaves.append(left)
            backs.append(back)
    print(f"{'':28} {'median':>8} {'max':>8}  target")
    for label, values, target in (
        ("stop (cut) -> streams ended", cuts, "<= 1 s"),
        ("SIGKILL -> leaves the pool", leaves, "<= 2 s"),
        ("SIGKILL -> healthy again", backs, "(restart + model load)"),
    ):
        print(f"{label:28} {statistics.median(values):7.3f}s {max(values):7.3f}s  {target}")


if __name__ == "__main__":
    main()
