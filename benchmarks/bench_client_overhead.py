"""How much latency `sovllm bench`'s client adds, against a server that answers at once.

The stub server (tests/unit/bench/stub.py) runs as its own process and stamps, on the system's
monotonic clock (perf_counter is CLOCK_MONOTONIC on Linux, shared by processes), when each
request's first byte arrived and when it began writing the whole answer. For each request:

    overhead = (client last_token - client sent) - (server replying - server arrived)

which is the client's send path, loopback both ways, and the client's receive path. Open-loop
Poisson arrivals at each rate; the client runs on uvloop, as `sovllm bench` does.

Baseline: a minimal raw asyncio client (one keep-alive socket per request in flight, bytes
in, bytes out, no parsing beyond finding the end) on the same stub, the floor for any Python
client. Prints overhead p50/p99, the client's lateness against the schedule, CPU per request,
and the ratio to the baseline.

    .venv/bin/python benchmarks/bench_client_overhead.py [--rates 100,300,500] [--seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.unit.bench.stub import TEMPLATE_OVERHEAD  # noqa: E402

from sovllm.bench.client import BenchClient  # noqa: E402
from sovllm.bench.config import Lengths, Load, RunBounds, Workload  # noqa: E402
from sovllm.bench.metrics import percentile  # noqa: E402
from sovllm.bench.prompts import fit  # noqa: E402
from sovllm.bench.runner import Run  # noqa: E402
from sovllm.bench.workload import open_loop  # noqa: E402


def start_stub() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.unit.bench.stub"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}"


def timings(base: str) -> dict[str, list[float]]:
    doc: dict[str, list[float]] = httpx.get(f"{base}/stub/timings", timeout=30).json()
    return doc


async def bench_client(base: str, rate: float, seconds: float) -> dict[str, float]:
    n = int(rate * seconds)
    cal = fit([(8, 8 + TEMPLATE_OVERHEAD), (32, 32 + TEMPLATE_OVERHEAD)], "tokenize")
    async with BenchClient(f"{base}/v1", None, None, 60.0) as client:
        target = await client.discover("stub")
        workload = Workload(prompt=Lengths(20, 30), output=Lengths(8, 8), seed=1)
        bounds = RunBounds(duration_s=seconds * 3, max_requests=n, warmup_s=0.0)
        cpu = time.process_time()
        run = Run(client, target, workload, Load("rate", rate), bounds, cal, seed=int(rate))
        result = await run.execute(open_loop)
        cpu = time.process_time() - cpu
    server = timings(base)
    over, late = [], []
    for r in result.records:
        if r.status != "ok" or r.response_id not in server:
            continue
        arrived, replying = server[r.response_id]
        assert r.sent is not None and r.last_token is not None
        over.append((r.last_token - r.sent) - (replying - arrived))
        late.append(r.sent - r.scheduled)
    return _stats(over, late, cpu, len(result.records))


def _stats(over: list[float], late: list[float], cpu: float, n: int) -> dict[str, float]:
    over.sort()
    late.sort()
    return {
        "requests": n,
        "ok": len(over),
        "overhead_p50_ms": percentile(over, 50) * 1e3,
        "overhead_p99_ms": percentile(over, 99) * 1e3,
        "lateness_p50_ms": percentile(late, 50) * 1e3,
        "cpu_per_request_ms": cpu / max(1, n) * 1e3,
    }


async def raw_client(base: str, rate: float, seconds: float) -> dict[str, float]:
    """The floor: raw sockets, a pool of idle keep-alive connections, no HTTP library."""
    host, port = base.removeprefix("http://").split(":")
    n = int(rate * seconds)
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    rows: list[tuple[float, float, float, str]] = []
    rng = random.Random(2)

    async def one(scheduled: float, i: int) -> None:
        conn = idle.pop() if idle else await asyncio.open_connection(host, int(port))
        reader, writer = conn
        body = json.dumps(
            {
                "model": "stub",
                "messages": [{"role": "user", "content": "a b c d e f g h i j"}],
                "max_tokens": 8,
                "stream": True,
            }
        ).encode()
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        sent = time.perf_counter()
        writer.write(head + body)
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            data += await reader.read(65536)
        last = time.perf_counter()
        rid = data.split(b'"id":"', 1)[1].split(b'"', 1)[0].decode()
        rows.append((scheduled, sent, last, rid))
        idle.append(conn)

    cpu = time.process_time()
    t = time.perf_counter()
    tasks = []
    for i in range(n):
        t += rng.expovariate(rate)
        delay = t - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(t, i)))
    await asyncio.gather(*tasks)
    cpu = time.process_time() - cpu
    for _, writer in idle:
        writer.close()
    server = timings(base)
    over = [(last - sent) - (server[rid][1] - server[rid][0]) for _, sent, last, rid in rows]
    late = [sent - sched for sched, sent, _, _ in rows]
    return _stats(over, late, cpu, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="100,300,500")
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run  # type: ignore[assignment]
    print(
        f"{'client':<14}{'rate':>6}{'ok':>7}{'p50 ms':>9}{'p99 ms':>9}{'late ms':>9}"
        f"{'cpu/req ms':>12}{'p50 ratio':>11}"
    )
    for rate in (float(r) for r in args.rates.split(",")):
        proc, base = start_stub()
        try:
            floor = run(raw_client(base, rate, args.seconds))
            ours = run(bench_client(base, rate, args.seconds))
        finally:
            proc.kill()
            proc.wait()
        for name, s in (("raw asyncio", floor), ("sovllm bench", ours)):
            ratio = s["overhead_p50_ms"] / floor["overhead_p50_ms"]
            print(
                f"{name:<14}{rate:>6.0f}{s['ok']:>7.0f}{s['overhead_p50_ms']:>9.2f}"
                f"{s['overhead_p99_ms']:>9.2f}{s['lateness_p50_ms']:>9.2f}"
                f"{s['cpu_per_request_ms']:>12.2f}{ratio:>11.2f}"
            )
    print("one run per rate on a shared machine: rerun to see the noise")


if __name__ == "__main__":
    main()
