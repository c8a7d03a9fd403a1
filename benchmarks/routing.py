"""Multi-turn chat on 2 embedded replicas: prefix_affinity against least_outstanding, and the peer.

Issue 6's workload: 8 users, each holding an 8-turn conversation; each turn adds a user message
of about 60 new tokens to the whole conversation so far and asks for 32 tokens (forced, so every
system generates the same amount). Users run side by side, closed loop, no think time.

Systems, on the same model and the same CPU threads in total:

- affinity: `sovllm serve --replicas 2`, `routing.policy: prefix_affinity`;
- least: the same with `least_outstanding`;
- peer: llama-cpp-python's own server (`python -m llama_cpp.server`), one process.

Prints TTFT p50/p95 (client side: send to the first content chunk), aggregate output tokens/s,
each sovllm run's prefix cache hit rate (tokens reused / prompt tokens looked up, from the
gateway's /metrics), and the ratios against the targets: affinity TTFT p50 <= 0.5x least's,
affinity throughput >= 2x the peer's.

Output tokens are the ones that came back: the answer's `usage.completion_tokens` where the
server sends one (sovllm, asked with `stream_options.include_usage`), else the streamed content
chunks (llama_cpp.server sends no usage when streaming; one chunk a token, none for a token that
ends inside a UTF-8 character, so a slight undercount). The table says which. The peer runs
with its prompt cache on (`--cache True`): the workload is built around prefix reuse.

    .venv/bin/python benchmarks/routing.py [--users 8] [--turns 8] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.engine_throughput import free_port, model_path, percentile, server
from tests.conftest import MODEL_ID, run_server

_TEXT = (
    "the a river mountain city engine quiet bright tomorrow because under seven market window "
    "garden letter silver morning travel winter number question answer paper history science "
    "music ocean forest village machine system people story language simple careful ancient"
)
WORDS = _TEXT.split(" ")


@dataclass
class Result:
    system: str
    ttft: list[float] = field(default_factory=list)
    ttft_later: list[float] = field(default_factory=list)
    """Turns 2 and later: those a KV cache can help."""
    output_tokens: int = 0
    """Counted from what came back, never assumed (see count_sources)."""
    count_sources: dict[str, int] = field(default_factory=dict)
    """How many answers' tokens came from `usage`, how many from counting `chunks`."""
    wall_s: float = 0.0
    hit_rate: float | None = None
    errors: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "ttft_p50": percentile(self.ttft, 50),
            "ttft_p95": percentile(self.ttft, 95),
            "ttft_later_p50": percentile(self.ttft_later, 50),
            "output_tok_s": self.output_tokens / self.wall_s if self.wall_s else 0.0,
            "hit_rate": self.hit_rate,
            "errors": self.errors,
            "requests": len(self.ttft),
            "output_tokens": self.output_tokens,
            "output_tokens_from": dict(self.count_sources),
        }


def user_message(rng: random.Random, user: int, turn: int) -> str:
    # About 60 tokens: 45 short words and a distinct opening.
    return f"User {user}, question {turn}: " + " ".join(rng.choice(WORDS) for _ in range(45)) + "?"


@dataclass
class Turn:
    ttft: float
    text: str
    tokens: int
    """Output tokens received: usage.completion_tokens, else the content chunks."""
    source: str
    """"usage" or "chunks"."""


async def one_turn(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]
) -> Turn:
    start = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    usage: int | None = None
    async with client.stream("POST", url, json=body, headers=headers) as r:
        if r.status_code != 200:
            await r.aread()
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = int(chunk["usage"]["completion_tokens"])
            for choice in chunk.get("choices") or ():
                text = (choice.get("delta") or {}).get("content")
                if text:
                    first = first or time.perf_counter()
                    parts.append(text)
    if first is None:
        raise RuntimeError("no content came back")
    if usage is not None:
        return Turn(first - start, "".join(parts), usage, "usage")
    return Turn(first - start, "".join(parts), len(parts), "chunks")


async def run_users(
    system: str, base: str, headers: dict[str, str], extra: dict[str, Any], args: Any
) -> Result:
    result = Result(system)
    url = base + "/v1/chat/completions"

    async def user(u: int, client: httpx.AsyncClient) -> None:
        rng = random.Random(1000 + u)
        history: list[dict[str, str]] = [{"role": "system", "content": "You are concise."}]
        for turn in range(args.turns):
            history.append({"role": "user", "content": user_message(rng, u, turn)})
            body = {"model": MODEL_ID, **extra, "messages": history,
                    "max_tokens": args.answer_tokens, "temperature": 0, "stream": True}  # fmt: skip
            try:
                got = await one_turn(client, url, body, headers)
            except (RuntimeError, httpx.HTTPError) as exc:
                result.errors += 1
                print(f"  {system}: user {u} turn {turn}: {exc}", file=sys.stderr)
                return
            result.ttft.append(got.ttft)
            if turn:
                result.ttft_later.append(got.ttft)
            result.output_tokens += got.tokens
            result.count_sources[got.source] = result.count_sources.get(got.source, 0) + 1
            history.append({"role": "assistant", "content": got.text})
            if args.think_time and turn + 1 < args.turns:
                # A person reads the answer and types the next question (the workload, not a wait
                # for the server): exponential, as a closed-loop user model in `sovllm bench`.
                await asyncio.sleep(rng.expovariate(1 / args.think_time))

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=64)) as client:
        # Warm-up: page in the weights and the code paths, not counted.
        warm = {"model": extra.get("model", MODEL_ID), "max_tokens": 4, "stream": True,
                "messages": [{"role": "user", "content": "warm up"}]}  # fmt: skip
        await one_turn(client, url, {**extra, **warm}, headers)
        start = time.perf_counter()
        await asyncio.gather(*(user(u, client) for u in range(args.users)))
        result.wall_s = time.perf_counter() - start
    return result


def hit_rate(base: str, headers: dict[str, str]) -> float | None:
    """Prefix cache hits / queries from the gateway's /metrics, once the probes have caught up."""
    previous: tuple[float, float] | None = None
    for _ in range(40):
        text = httpx.get(base + "/metrics", headers=headers, timeout=10).text
        values = {}
        for line in text.splitlines():
            for name in ("prefix_cache_queries_total", "prefix_cache_hits_total"):
                if line.startswith(f"sovllm:{name}{{"):
                    values[name] = float(line.rsplit(" ", 1)[1])
        now = (
            values.get("prefix_cache_queries_total", 0.0),
            values.get("prefix_cache_hits_total", 0.0),
        )
        if now == previous and now[0] > 0:
            return now[1] / now[0]
        previous = now
        time.sleep(0.5)  # the gateway learns workers' counters from its 0.5 s probes
    return None


def run_sovllm(policy: str, args: Any) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "sovllm.yaml"
        config.write_text(f"routing:\n  policy: {policy}\n")
        env = {"SOVLLM_ENGINE__THREADS": str(max(1, args.threads // 2))}
        if args.slots:
            env["SOVLLM_ENGINE__SLOTS"] = str(args.slots)
        with run_server(
            Path(tmp), env=env, args=("--replicas", "2", "--config", str(config))
        ) as srv:
            extra = {"ignore_eos": True, "stream_options": {"include_usage": True}}
            result = asyncio.run(run_users(policy, srv.url, srv.auth, extra, args))
            result.hit_rate = hit_rate(srv.url, srv.auth)
    return result


def run_peer(args: Any) -> Result:
    import llama_cpp as C

    path = model_path()
    vocab = C.Llama(str(path), vocab_only=True, verbose=False)
    v = C.llama_model_get_vocab(vocab.model)
    eog = [t for t in range(C.llama_vocab_n_tokens(v)) if C.llama_vocab_is_eog(v, t)]
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--port", str(port),
           "--model_alias", "peer", "--n_ctx", "8192", "--n_threads", str(args.threads),
           "--n_threads_batch", str(args.threads), "--verbose", "False",
           "--interrupt_requests", "False",
           # Its prompt cache: each turn resends the conversation, as for sovllm's prefix cache.
           "--cache", "True"]  # fmt: skip
    extra = {"model": "peer", "logit_bias": {str(t): -100 for t in eog}}
    with (
        tempfile.TemporaryDirectory() as tmp,
        server(cmd, dict(os.environ), port, "/v1/models", Path(tmp) / "peer.log") as base,
    ):
        return asyncio.run(run_users("peer", base, {}, extra, args))


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--answer-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--slots", type=int, default=0,
        help="Sequences (and cached conversations) per replica; 0: the engine's default (32).",
    )  # fmt: skip
    parser.add_argument("--systems", default="affinity,least,peer")
    parser.add_argument("--think-time", type=float, default=0.0, help="Mean seconds between turns.")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    systems = args.systems.split(",")
    results: dict[str, Result] = {}
    if "affinity" in systems:
        results["affinity"] = run_sovllm("prefix_affinity", args)
    if "least" in systems:
        results["least"] = run_sovllm("least_outstanding", args)
    if "peer" in systems:
        results["peer"] = run_peer(args)
    print(f"\n{args.users} users x {args.turns} turns, {args.answer_tokens} tokens an answer, "
          f"{args.slots or 'default'} slots a replica, think time {args.think_time:g} s, "
          f"{args.threads} threads in total, "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'system':10} {'TTFT p50':>9} {'p95':>8} {'turns 2+ p50':>13} {'out tok/s':>10} "
          f"{'out tokens':>10} {'cache hits':>10} {'errors':>6}  tokens counted from")  # fmt: skip
    rows = {name: r.summary() for name, r in results.items()}
    for name, s in rows.items():
        hits = f"{s['hit_rate']:.0%}" if s["hit_rate"] is not None else "-"
        sources = ", ".join(f"{k}: {v} answers" for k, v in sorted(s["output_tokens_from"].items()))
        print(f"{name:10} {_s(s['ttft_p50']):>9} {_s(s['ttft_p95']):>8} "
              f"{_s(s['ttft_later_p50']):>13} {s['output_tok_s']:10.1f} {s['output_tokens']:>10} "
              f"{hits:>10} {s['errors']:>6}  {sources or '-'}")  # fmt: skip
    targets = {}
    if "affinity" in rows and "least" in rows:
        ratio = rows["affinity"]["ttft_p50"] / rows["least"]["ttft_p50"]
        p95 = rows["affinity"]["ttft_p95"] / rows["least"]["ttft_p95"]
        targets["ttft_p50_affinity_over_least"] = ratio
        print(f"\nTTFT p50 affinity / least_outstanding = {ratio:.2f} (target <= 0.5: "
              f"{'PASS' if ratio <= 0.5 else 'MISS'}); p95 ratio {p95:.2f}")  # fmt: skip
    if "affinity" in rows and "peer" in rows:
        ratio = rows["affinity"]["output_tok_s"] / rows["peer"]["output_tok_s"]
        targets["throughput_affinity_over_peer"] = ratio
        print(f"throughput affinity / peer = {ratio:.2f}x (target >= 2: "
              f"{'PASS' if ratio >= 2 else 'MISS'})")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"results": rows, "targets": targets,
                                         "args": {k: str(v) for k, v in vars(args).items()}},
                                        indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
