"""What identity and quotas add per request, against a stub engine that answers at once.

The same app serves the same requests twice over HTTP (uvicorn on loopback):
  baseline: identity and admission replaced by no-ops (a fixed principal, no database);
  governed: the real path: key lookup, quota admission and settlement in the database.
The difference of the latency percentiles is the gateway's overhead. It runs on SQLite and on a
private PostgreSQL server, with a key that has every limit set (the most work per request).

The governed run's own requests fill the 60-second windows (about 2,000 by the end), and every
admission reads its key's and its tenant's window. Up to session 2 a window was one row per
request, so the overhead grew with --requests; it is now per-second buckets (at most 61 rows).
Baseline and governed run one after the other: on a shared machine, run it two or three times.

    .venv/bin/python benchmarks/gateway_overhead.py [--requests 2000]

`--tracing` measures what OpenTelemetry adds instead (issue #17: <= 0.2 ms p50 with export on):
the governed path on SQLite in two servers at once, `telemetry.otlp_endpoint` unset in one and set
to a loopback OTLP/HTTP receiver that accepts and drops every batch in the other, their requests
interleaved one by one, `--rounds` times, with the servers' CPU time a request; and what a request's
tracing calls cost in process, export off and on.

    .venv/bin/python benchmarks/gateway_overhead.py --tracing [--requests 2000] [--rounds 3]
`--sample-ratio R` sets the traced server's `telemetry.sample_ratio` (the target is for 1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import free_port
from tests.postgres import create_database, private_postgres

from sovllm.config import load_settings
from sovllm.engines.base import (
    EngineStats,
    GenerationOutput,
    GenerationRequest,
    ModelInfo,
    Timings,
)
from sovllm.governance import identity as idn
from sovllm.governance import quotas, tenants
from sovllm.governance.audit import open_audit
from sovllm.observability import tracing
from sovllm.serve.app import create_app
from sovllm.serve.build import in_process
from sovllm.serve.gateway import open_telemetry
from sovllm.store.db import Database
from sovllm.store.migrate import upgrade

MODEL = "stub"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}


class StubStream:
    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.prompt_tokens = 3

    async def __aiter__(self) -> AsyncIterator[GenerationOutput]:
        now = time.perf_counter()
        yield GenerationOutput(
            text="ok", token_ids=(1,), prompt_tokens=3, completion_tokens=1,
            finish_reason="stop", timings=Timings(now, now, now, now), time=now,
        )  # fmt: skip

    def cancel(self) -> None:
        pass


class StubEngine:
    """Answers every request at once with one token: only the gateway's own work remains."""

    model = ModelInfo(id=MODEL, path="-", sha256="0" * 64, context_length=4096, created=0)
    served_name = MODEL
    healthy = True

    def submit(self, request: GenerationRequest) -> StubStream:
        return StubStream(request.request_id)

    def count_tokens(self, request: GenerationRequest) -> int:
        return 3

    def stats(self) -> EngineStats:
        return EngineStats(0, 0, 1, 1)

    def start(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


def serve(
    db_url: str,
    governed: bool,
    port: int,
    data_dir: Path,
    otlp: str | None,
    sample_ratio: float = 1.0,
) -> None:
    """The server side, in its own process so that it shares no GIL with the client."""
    db = Database(db_url)
    telemetry = {"otlp_endpoint": otlp, "sample_ratio": sample_ratio} if otlp else {}
    settings = load_settings(None, data_dir=data_dir, telemetry=telemetry)
    audit = open_audit(settings, db)
    pool = in_process(StubEngine(), settings)  # type: ignore[arg-type]
    app = create_app(settings, pool, db, audit, telemetry=open_telemetry(settings))
    if not governed:
        principal = idn.authenticate(db, KEY_FOR[db_url])

        def no_governance(
            db: object,
            raw_key: object,
            roles: object,
            request_id: str,
            tokens: int,
            gate: Callable[[idn.Principal], None] | None = None,
        ) -> tuple[idn.Principal, quotas.Ticket]:
            ticket = quotas.Ticket(
                request_id, principal.key_id, principal.tenant_id, tokens,
                quotas.RateLimitHeaders(), 0,
            )  # fmt: skip
            return principal, ticket

        quotas.authorize_and_admit = no_governance  # type: ignore[assignment]
        quotas.settle = lambda *a, **k: None  # type: ignore[assignment]
    uvicorn.run(app, port=port, log_level="warning")


KEY_FOR: dict[str, str] = {}
SERVER_PID: dict[str, int] = {}
"""Each served URL's server process, for its CPU time."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def serving(
    db_url: str,
    key: str,
    governed: bool,
    data_dir: Path,
    otlp: str | None = None,
    sample_ratio: float = 1.0,
) -> Iterator[str]:
    # Both runs are gateways of one service: they share its data folder and so its keys (a
    # gateway with keys of its own on the same database is refused).
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", db_url, "--key", key, "--port", str(port),
         "--data-dir", str(data_dir)] + (["--governed"] if governed else [])
        + (["--otlp", otlp, "--sample-ratio", str(sample_ratio)] if otlp else [])
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        SERVER_PID[f"{url}/v1/chat/completions"] = proc.pid
        yield f"{url}/v1/chat/completions"
    finally:
        proc.terminate()
        proc.wait()


def measure(url: str, key: str, n: int) -> list[float]:
    out = []
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        for _ in range(50):  # warm connections, caches, the thread pool
            http.post(url, json=BODY).raise_for_status()
        for _ in range(n):
            t = time.perf_counter()
            r = http.post(url, json=BODY)
            out.append(time.perf_counter() - t)
            r.raise_for_status()
    return out


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100)[int(q) - 1] * 1000


def bench_key(url: str) -> str:
    """A user key of tenant "bench", every limit set (the most work a request), in the database
    at `url`, brought up to date first."""
    db = Database(url)
    upgrade(db)
    every_limit = idn.Limits(10**6, 10**9, 10**4, 10**12)
    tenants.create_tenant(db, "bench", every_limit)
    key, _ = tenants.create_key(db, "bench", idn.Role.USER, every_limit)
    db.dispose()
    return key


def run_backend(name: str, url: str, n: int) -> dict[str, float]:
    key = bench_key(url)
    data_dir = Path(tempfile.mkdtemp())
    with serving(url, key, False, data_dir) as u:
        base = measure(u, key, n)
    with serving(url, key, True, data_dir) as u:
        gov = measure(u, key, n)
    row = {
        "base_p50": pct(base, 50), "base_p95": pct(base, 95),
        "gov_p50": pct(gov, 50), "gov_p95": pct(gov, 95),
    }  # fmt: skip
    row["added_p50"] = row["gov_p50"] - row["base_p50"]
    row["added_p95"] = row["gov_p95"] - row["base_p95"]
    print(
        f"{name:<11} baseline p50 {row['base_p50']:.2f} ms p95 {row['base_p95']:.2f} ms | "
        f"governed p50 {row['gov_p50']:.2f} ms p95 {row['gov_p95']:.2f} ms | "
        f"added p50 {row['added_p50']:.2f} ms p95 {row['added_p95']:.2f} ms"
    )
    return row


class _Drop(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that accepts every batch and keeps nothing (an empty body is an
    empty Export*ServiceResponse)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Drop)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def measure_interleaved(urls: list[str], key: str, n: int) -> list[list[float]]:
    """`n` requests to each server, alternating request by request (A B B A ...): drift in the
    machine's load (other jobs, CPU frequency) falls on every server alike."""
    out: list[list[float]] = [[] for _ in urls]
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        for url in urls * 50:  # warm connections, caches, the thread pool
            http.post(url, json=BODY).raise_for_status()
        for i in range(n):
            order = list(range(len(urls)))
            for j in order if i % 2 == 0 else reversed(order):
                t = time.perf_counter()
                r = http.post(urls[j], json=BODY)
                out[j].append(time.perf_counter() - t)
                r.raise_for_status()
    return out


def calls_cost(telemetry: tracing.Telemetry, n: int = 20000) -> float:
    """Microseconds one request's tracing calls (span, children, attributes, GenAI metrics)
    take in process, without a server around them: with export off, the no-op providers; with
    export on, the spans' encoding excluded (the batch processor exports between chunks of 250
    requests, untimed, so that its queue never overflows)."""
    from concurrent.futures import Future

    from sovllm.engines.base import SamplingParams

    now = time.perf_counter()
    out = GenerationOutput(
        text="ok", token_ids=(1,), prompt_tokens=3, completion_tokens=1,
        finish_reason="stop", timings=Timings(now, now, now, now), time=now,
    )  # fmt: skip
    written: Future[int] = Future()
    written.set_result(1)
    took = 0.0
    for _ in range(0, n, 250):
        t = time.perf_counter()
        for _ in range(250):
            trace = tracing.start_request(telemetry, True, MODEL, SamplingParams(max_tokens=4))
            with trace.current():
                with trace.child("admission"):
                    pass
                trace.admitted("chatcmpl-1", MODEL, "bench", None)
            trace.end(out, "completed", written)
        took += time.perf_counter() - t
        if telemetry.records is not None:
            telemetry.records.processor.force_flush()
    return took / (n // 250 * 250) * 1e6


def run_tracing(n: int, rounds: int, sample_ratio: float = 1.0) -> None:
    """Governed on SQLite, export off and on: two servers up at once, their requests
    interleaved one by one, `rounds` times; the p50 and p95 tracing adds, per round and their
    median."""
    tmp = Path(tempfile.mkdtemp())
    url = f"sqlite:///{tmp / 'bench.db'}"
    key = bench_key(url)
    data_dir = tmp / "data"
    added: dict[str, list[float]] = {"p50": [], "p95": [], "cpu": []}
    with (
        receiver() as otlp,
        serving(url, key, True, data_dir) as off_url,
        serving(url, key, True, data_dir, otlp, sample_ratio) as on_url,
    ):
        off_cost = calls_cost(tracing.disabled())
        exporting = tracing.exporting(tracing.ExportSettings(otlp))
        on_cost = calls_cost(exporting)
        exporting.shutdown()
        print(
            f"the request's tracing calls, in process: export off {off_cost:.1f} us, "
            f"export on {on_cost:.1f} us"
        )
        for r in range(rounds):
            cpu = [cpu_seconds(SERVER_PID[u]) for u in (off_url, on_url)]
            off, on = measure_interleaved([off_url, on_url], key, n)
            # The servers' CPU time a request (the warm-up's 50 included): unlike latency, it
            # does not move with the machine's load, only with the work a request makes.
            cpu = [
                (cpu_seconds(SERVER_PID[u]) - c) / (n + 50) * 1000
                for u, c in zip((off_url, on_url), cpu, strict=True)
            ]
            added["cpu"].append(cpu[1] - cpu[0])
            for q in ("p50", "p95"):
                added[q].append(pct(on, float(q[1:])) - pct(off, float(q[1:])))
            print(
                f"round {r + 1}: off p50 {pct(off, 50):.2f} ms p95 {pct(off, 95):.2f} ms "
                f"cpu {cpu[0]:.3f} ms | on p50 {pct(on, 50):.2f} ms p95 {pct(on, 95):.2f} ms "
                f"cpu {cpu[1]:.3f} ms | added p50 {added['p50'][-1]:.3f} ms "
                f"cpu {added['cpu'][-1]:.3f} ms"
            )
    p50 = statistics.median(added["p50"])
    spread = f"{min(added['p50']):.3f} to {max(added['p50']):.3f}"
    print(
        f"tracing adds p50 {p50:.3f} ms (median of {rounds} rounds, spread {spread}; rounds "
        f"{', '.join(f'{x:.3f}' for x in added['p50'])}), p95 {statistics.median(added['p95']):.3f} ms"
    )
    print(
        f"server CPU a request: tracing adds {statistics.median(added['cpu']):.3f} ms (rounds "
        f"{', '.join(f'{x:.3f}' for x in added['cpu'])})"
    )
    if sample_ratio != 1.0:  # the target is for every request traced
        print(f"tracing at sample_ratio {sample_ratio} adds {p50:.3f} ms p50 (no target)")
        return
    print(f"{'PASS' if p50 <= 0.2 else 'FAIL'}: tracing adds {p50:.3f} ms p50 (target <= 0.2 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--governed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--otlp", help=argparse.SUPPRESS)
    parser.add_argument(
        "--sample-ratio",
        type=float,
        default=1.0,
        help="The traced server's telemetry.sample_ratio (with --tracing; default 1).",
    )
    parser.add_argument("--tracing", action="store_true", help="Measure tracing's overhead.")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.serve:
        KEY_FOR[args.serve] = args.key
        serve(args.serve, args.governed, args.port, args.data_dir, args.otlp, args.sample_ratio)
        return
    if args.tracing:
        run_tracing(args.requests, args.rounds, args.sample_ratio)
        return
    tmp = Path(tempfile.mkdtemp())
    sqlite = run_backend("sqlite", f"sqlite:///{tmp / 'bench.db'}", args.requests)
    with private_postgres() as server:
        pg = run_backend("postgresql", create_database(server), args.requests)
    print()
    for name, row, target in (("sqlite", sqlite, 1.0), ("postgresql", pg, 3.0)):
        verdict = "PASS" if row["added_p50"] <= target else "FAIL"
        print(f"{verdict}: {name} adds {row['added_p50']:.2f} ms p50 (target <= {target} ms)")


if __name__ == "__main__":
    main()
