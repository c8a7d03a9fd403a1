"""What streaming one token costs the server's event loop, against a stub engine.

The engine decodes on its own thread and shares the CPUs with the event loop: every microsecond
the loop spends per token is taken from a decoding thread (session 13 in docs/performance.md:
at 32 streams the loop's wake-ups pre-empt a decoding thread, and the other one waits for it at
the next barrier). This measures that cost without a model.

A stub engine ticks on its own thread like the real one: every `--step-ms` it makes one output
(one token) for each open request and posts the step's outputs to the event loop in one call,
as `LlamaCppEngine._deliver` does. `--streams` clients stream `--tokens` tokens each, all at
once. The server runs in its own process; its main thread is the event loop, whose CPU time
(from /proc) is divided by the tokens the clients received.

Two servers, measured in the same run, interleaved, `--repeat` times:
  bare:   a plain Starlette app under the same uvicorn that streams the same stub engine's
          tokens as pre-built SSE lines: the floor that HTTP streaming itself costs;
  sovllm: `sovllm serve`'s app (governed, on SQLite) over the same stub engine.

    .venv/bin/python benchmarks/stream_overhead.py [--streams 32] [--tokens 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.engine_throughput import GROUPS, free_port, server
from benchmarks.gateway_overhead import bench_key

from sovllm.config import load_settings
from sovllm.engines.base import (
    EngineStats,
    GenerationOutput,
    GenerationRequest,
    ModelInfo,
    SamplingParams,
    Timings,
)
from sovllm.governance.audit import open_audit
from sovllm.serve.app import create_app
from sovllm.serve.build import in_process
from sovllm.serve.gateway import open_telemetry
from sovllm.store.db import Database

MODEL = "stub"
SYSTEMS = ("bare", "sovllm")


class TickStream:
    def __init__(self, engine: TickEngine, request: GenerationRequest) -> None:
        self.request_id = request.request_id
        self.prompt_tokens = 3
        self.max_tokens = request.sampling.max_tokens or 16
        self.done = 0
        self.arrival = time.perf_counter()
        self.first: float | None = None
        self.queue: asyncio.Queue[GenerationOutput] = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self._engine = engine

    async def __aiter__(self) -> AsyncIterator[GenerationOutput]:
        try:
            while True:
                out = await self.queue.get()
                yield out
                if out.finished:
                    return
        finally:
            self.cancel()

    def cancel(self) -> None:
        self._engine.forget(self)

    def next_output(self, now: float) -> GenerationOutput:
        self.done += 1
        self.first = self.first or now
        finished = self.done >= self.max_tokens
        timings = Timings(self.arrival, self.arrival, self.first, now if finished else None)
        return GenerationOutput(
            text=" word", token_ids=(self.done,), prompt_tokens=3,
            completion_tokens=self.done, finish_reason="length" if finished else None,
            timings=timings if finished else None, time=now,
        )  # fmt: skip


class TickEngine:
    """One token for every open request each `step_s`, posted to the loop once a step."""

    model = ModelInfo(id=MODEL, path="-", sha256="0" * 64, context_length=4096, created=0)
    served_name = MODEL
    healthy = True

    def __init__(self, step_s: float, slots: int) -> None:
        self._step_s = step_s
        self._slots = slots
        self._lock = threading.Lock()
        self._open: list[TickStream] = []
        self._thread = threading.Thread(target=self._tick, daemon=True)

    def submit(self, request: GenerationRequest) -> TickStream:
        stream = TickStream(self, request)
        with self._lock:
            self._open.append(stream)
        return stream

    def forget(self, stream: TickStream) -> None:
        with self._lock:
            if stream in self._open:
                self._open.remove(stream)

    def _tick(self) -> None:
        while True:
            time.sleep(self._step_s)
            now = time.perf_counter()
            with self._lock:
                items = [(s, s.next_output(now)) for s in self._open]
                self._open = [s for s in self._open if s.done < s.max_tokens]
            if items:
                items[0][0].loop.call_soon_threadsafe(_put_all, items)

    def count_tokens(self, request: GenerationRequest) -> int:
        return 3

    def stats(self) -> EngineStats:
        with self._lock:
            return EngineStats(len(self._open), 0, self._slots, self._slots)

    def start(self) -> None:
        self._thread.start()

    def shutdown(self) -> None:
        pass


def _put_all(items: list[tuple[TickStream, GenerationOutput]]) -> None:
    for stream, out in items:
        stream.queue.put_nowait(out)


def bare_app(engine: TickEngine) -> Starlette:
    """The floor: Starlette streams the stub's tokens as SSE lines, nothing else."""
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, StreamingResponse
    from starlette.routing import Route

    async def chat(request: Request) -> StreamingResponse:
        body = await request.json()
        gen = GenerationRequest(
            request_id="x", sampling=SamplingParams(max_tokens=body["max_tokens"])
        )
        stream = engine.submit(gen)

        async def events() -> AsyncIterator[str]:
            async for out in stream:
                data = {"choices": [{"delta": {"content": out.text}}]}
                yield f"data: {json.dumps(data)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/health", health),  # what `server` waits for, as sovllm's own
        ]
    )


def serve(
    system: str,
    port: int,
    db_url: str,
    data_dir: Path,
    step_s: float,
    streams: int,
    profile: Path | None,
) -> None:
    """The server side, in its own process; its main thread runs the event loop."""
    engine = TickEngine(step_s, slots=streams)  # every stream has a slot
    if system == "bare":
        engine.start()  # sovllm's app starts its engines itself
        uvicorn.run(bare_app(engine), port=port, log_level="warning")
        return
    db = Database(db_url)
    settings = load_settings(None, data_dir=data_dir)
    audit = open_audit(settings, db)
    pool = in_process(engine, settings)  # type: ignore[arg-type]
    app = create_app(settings, pool, db, audit, telemetry=open_telemetry(settings))
    if profile is None:
        uvicorn.run(app, port=port, log_level="warning")
        return
    import cProfile
    import signal

    # uvicorn re-raises the SIGTERM that ends a run once it has shut down: end by exception.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    prof = cProfile.Profile()  # the main thread only: the event loop
    try:
        prof.runcall(uvicorn.run, app, port=port, log_level="warning")
    finally:
        prof.dump_stats(profile)


def thread_cpu_seconds(pid: int, tid: int) -> float:
    """CPU time of one thread, in nanoseconds' resolution (Linux /proc schedstat: its first
    field); /proc's stat counts in clock ticks of 10 ms, too coarse for one stream's tokens."""
    return int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0]) / 1e9


@contextmanager
def serving(
    system: str,
    db_url: str,
    data_dir: Path,
    step_s: float,
    streams: int,
    profile: Path | None = None,
) -> Iterator[tuple[str, int]]:
    """One server in a process of its own (its log beside the data folder): its chat URL and
    its process id, whose main thread is the event loop measured."""
    port = free_port()
    cmd = [sys.executable, __file__, "--serve", system, "--port", str(port), "--db", db_url,
           "--data-dir", str(data_dir), "--step-ms", str(step_s * 1000),
           "--streams", str(streams)]  # fmt: skip
    if profile and system == "sovllm":
        cmd += ["--profile", str(profile)]
    log = data_dir.parent / f"{system}.log"
    with server(cmd, dict(os.environ), port, "/health", log, system, start_s=60) as base:
        yield f"{base}/v1/chat/completions", GROUPS[base]


async def stream_all(url: str, key: str, streams: int, tokens: int) -> int:
    """`streams` streamed requests at once; the content chunks received, all told."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": tokens,
        "stream": True,
    }
    limits = httpx.Limits(max_connections=streams)
    headers = {"Authorization": f"Bearer {key}"}

    async def one(http: httpx.AsyncClient) -> int:
        n = 0
        async with http.stream("POST", url, json=body) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if line.startswith("data: {") and '"content":"' in line.replace(" ", ""):
                    n += 1
        return n

    async with httpx.AsyncClient(limits=limits, headers=headers, timeout=120) as http:
        counts = await asyncio.gather(*(one(http) for _ in range(streams)))
    return sum(counts)


def measure(url: str, pid: int, key: str, streams: int, tokens: int) -> float:
    """Microseconds of the event loop's CPU a token received."""
    asyncio.run(stream_all(url, key, 2, 8))  # warm: connections, the thread pool
    before = thread_cpu_seconds(pid, pid)
    got = asyncio.run(stream_all(url, key, streams, tokens))
    after = thread_cpu_seconds(pid, pid)
    if got != streams * tokens:
        raise SystemExit(f"{url}: received {got} tokens, expected {streams * tokens}")
    return (after - before) / got * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--step-ms", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--profile",
        type=Path,
        help="Write cProfile stats of sovllm's event loop to this file (its times are inflated).",
    )
    parser.add_argument("--serve", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    step_s = args.step_ms / 1000
    if args.serve:
        serve(args.serve, args.port, args.db, args.data_dir, step_s, args.streams, args.profile)
        return
    tmp = Path(tempfile.mkdtemp())
    db_url = f"sqlite:///{tmp / 'bench.db'}"
    key = bench_key(db_url)
    per_token: dict[str, list[float]] = {s: [] for s in SYSTEMS}
    with (
        serving("bare", db_url, tmp / "data", step_s, args.streams) as bare,
        serving("sovllm", db_url, tmp / "data", step_s, args.streams, args.profile) as sov,
    ):
        servers = {"bare": bare, "sovllm": sov}
        for r in range(args.repeat):
            order = SYSTEMS if r % 2 == 0 else tuple(reversed(SYSTEMS))
            for system in order:
                url, pid = servers[system]
                us = measure(url, pid, key, args.streams, args.tokens)
                per_token[system].append(us)
                print(f"run {r + 1} {system:<7} {us:6.1f} us of event-loop CPU a token")
    if args.profile:
        print(f"cProfile ran in sovllm's server: its figures above are inflated ({args.profile})")
    bare_us, sov_us = (statistics.median(per_token[s]) for s in SYSTEMS)
    spread = {s: f"{min(v):.1f}-{max(v):.1f}" for s, v in per_token.items()}
    print(
        f"\n{args.streams} streams x {args.tokens} tokens, a step every {args.step_ms:g} ms: "
        f"bare {bare_us:.1f} us a token ({spread['bare']}), sovllm {sov_us:.1f} "
        f"({spread['sovllm']}): sovllm x{sov_us / bare_us:.2f} the floor, "
        f"{sov_us - bare_us:.1f} us a token above it"
    )


if __name__ == "__main__":
    main()
