"""How much latency `sovllm bench`'s client adds, against a server that answers at once.

The stub server (tests/unit/bench/stub.py) runs as its own process and stamps, on the system's
monotonic clock (perf_counter is CLOCK_MONOTONIC on Linux, shared by processes), when each
request's first byte arrived and when it began writing the whole answer. For each request:

    overhead = (client last_token - client sent) - (server replying - server arrived)

which is the client's send path, loopback both ways, and the client's receive path: what the
client adds to a measured E2E. `sent` is stamped as the request's bytes go down the socket, so
the client's work before that (prompt, body, httpx's request building, taking a connection)
is lateness against the schedule, `sent - scheduled`, which the bench reports as queue delay;
`total` = (last_token - scheduled) - the server's span is both together.

Clients, each on the same stub within one run, in a rotating order:

- `raw asyncio`: the floor for any Python client: one keep-alive socket per request in
  flight, bytes in, bytes out, no parsing beyond finding the end;
- `httpx`: `sovllm bench` on httpx's own transport (httpcore; 8 pooled clients);
- `lean`: `sovllm bench` as it runs by default: httpx's API over `LeanTransport`.

Open-loop Poisson arrivals at each rate; the clients run on uvloop, as `sovllm bench` does.
Each (rate, repeat) starts a fresh stub. Prints every run, then per client and rate the
median and range over the repeats.

    .venv/bin/python benchmarks/bench_client_overhead.py [--rates 100,300,500] [--seconds 4]
        [--repeat 3] [--clients raw,httpx,lean]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.unit.bench.stub import TEMPLATE_OVERHEAD  # noqa: E402

from sovllm.bench.client import BenchClient, HttpKind  # noqa: E402
from sovllm.bench.config import RunBounds, Workload  # noqa: E402
from sovllm.bench.metrics import percentile  # noqa: E402
from sovllm.bench.prompts import fit  # noqa: E402
from sovllm.bench.runner import Run  # noqa: E402
from sovllm.bench.workload import open_loop  # noqa: E402
from sovllm.planner.workload import Lengths, Load  # noqa: E402

Stats = dict[str, float]


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


async def bench_client(base: str, rate: float, seconds: float, http: HttpKind) -> Stats:
    n = int(rate * seconds)
    cal = fit([(8, 8 + TEMPLATE_OVERHEAD), (32, 32 + TEMPLATE_OVERHEAD)], "tokenize")
    async with BenchClient(f"{base}/v1", None, None, 60.0, http=http) as client:
        target = await client.discover("stub")
        workload = Workload(prompt=Lengths(20, 30), output=Lengths(8, 8), seed=1)
        bounds = RunBounds(duration_s=seconds * 3, max_requests=n, warmup_s=0.0)
        cpu = time.process_time()
        run = Run(client, target, workload, Load("rate", rate), bounds, cal, seed=int(rate))
        result = await run.execute(open_loop)
        cpu = time.process_time() - cpu
        opened = client.transport.connections_opened if client.transport else None
    server = timings(base)
    rows = []
    for r in result.records:
        if r.status != "ok" or r.response_id not in server:
            continue
        arrived, replying = server[r.response_id]
        assert r.sent is not None and r.last_token is not None
        rows.append((r.scheduled, r.sent, r.last_token, replying - arrived))
    stats = _stats(rows, cpu, len(result.records))
    if opened is not None:
        stats["connections"] = opened
    return stats


def _stats(rows: list[tuple[float, float, float, float]], cpu: float, n: int) -> Stats:
    over = sorted(last - sent - server for _, sent, last, server in rows)
    late = sorted(sent - scheduled for scheduled, sent, _, _ in rows)
    total = sorted(last - scheduled - server for scheduled, _, last, server in rows)
    return {
        "requests": n,
        "ok": len(over),
        "overhead_p50_ms": percentile(over, 50) * 1e3,
        "overhead_p99_ms": percentile(over, 99) * 1e3,
        "lateness_p50_ms": percentile(late, 50) * 1e3,
        "total_p50_ms": percentile(total, 50) * 1e3,
        "cpu_per_request_ms": cpu / max(1, n) * 1e3,
    }


async def raw_client(base: str, rate: float, seconds: float) -> Stats:
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
    spans = [(s, sent, last, server[rid][1] - server[rid][0]) for s, sent, last, rid in rows]
    return _stats(spans, cpu, n)


CLIENTS: dict[str, Callable[[str, float, float], Coroutine[Any, Any, Stats]]] = {
    "raw": raw_client,
    "httpx": lambda base, rate, s: bench_client(base, rate, s, "httpx"),
    "lean": lambda base, rate, s: bench_client(base, rate, s, "lean"),
}
NAMES = {"raw": "raw asyncio", "httpx": "bench/httpx", "lean": "bench/lean"}
COLUMNS = ("overhead_p50_ms", "overhead_p99_ms", "lateness_p50_ms", "total_p50_ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="100,300,500")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", default="raw,httpx,lean")
    args = parser.parse_args()
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run  # type: ignore[assignment]
    clients = args.clients.split(",")
    rates = [float(r) for r in args.rates.split(",")]
    results: dict[tuple[str, float], list[Stats]] = {}
    print(
        f"{'client':<13}{'rate':>5}{'rep':>4}{'ok':>6}{'p50 ms':>8}{'p99 ms':>8}{'late ms':>8}"
        f"{'total ms':>9}{'cpu/req ms':>11}{'conns':>6}"
    )
    for rate in rates:
        for rep in range(args.repeat):
            proc, base = start_stub()
            order = clients[rep % len(clients) :] + clients[: rep % len(clients)]
            try:
                for name in order:
                    s = run(CLIENTS[name](base, rate, args.seconds))
                    results.setdefault((name, rate), []).append(s)
                    conns = f"{s['connections']:.0f}" if "connections" in s else "-"
                    print(
                        f"{NAMES[name]:<13}{rate:>5.0f}{rep + 1:>4}{s['ok']:>6.0f}"
                        f"{s['overhead_p50_ms']:>8.2f}{s['overhead_p99_ms']:>8.2f}"
                        f"{s['lateness_p50_ms']:>8.2f}{s['total_p50_ms']:>9.2f}"
                        f"{s['cpu_per_request_ms']:>11.2f}{conns:>6}",
                        flush=True,
                    )
            finally:
                proc.kill()
                proc.wait()
    print(f"\nmedian [min-max] over {args.repeat} runs; ms")
    print(
        f"{'client':<13}{'rate':>5}  {'overhead p50':<22}{'overhead p99':<22}"
        f"{'lateness p50':<22}{'total p50':<22}{'cpu/req':<22}"
    )
    for rate in rates:
        for name in clients:
            runs = results[(name, rate)]
            cells = []
            for key in (*COLUMNS, "cpu_per_request_ms"):
                v = [r[key] for r in runs]
                cells.append(f"{statistics.median(v):.2f} [{min(v):.2f}-{max(v):.2f}]")
            print(f"{NAMES[name]:<13}{rate:>5.0f}  " + "".join(f"{c:<22}" for c in cells))
    if "lean" in clients:
        worst = max(
            statistics.median(r["overhead_p50_ms"] for r in results[("lean", x)]) for x in rates
        )
        print(f"\nbench/lean overhead p50, worst rate's median: {worst:.2f} ms (target < 1 ms)")
    print("a shared machine: compare clients within a run, and rerun to see the noise")


if __name__ == "__main__":
    main()
