"""The engine's step budget (`engine.step_tokens`) under mixed arrivals (issue #15 item 6).

`engine_throughput.py` starts every stream at once, so a larger step budget looks free there:
at 32 streams, 2,048 tokens a step met both targets against llama-server where the default 512
did not (docs/performance.md). What it hides is the other side of the trade: a step is one
`llama_decode`, and every decoding stream waits for it, so a step full of a new prompt is a
pause in every running stream. This measures both sides with requests arriving while others
decode: `sovllm bench` in open loop (Poisson arrivals, prompts of 200-800 tokens, 128 forced
output tokens) against two `sovllm serve` processes that differ only in `step_tokens`,
interleaved and repeated, the one not measured frozen (SIGSTOP).

It prints, per budget, the medians over the rounds of TTFT p50/p95, TPOT p95, ITL p99 (the
pause a decoding stream sees) and output tok/s, and the ratios of each budget to the first.

    .venv/bin/python benchmarks/step_budget.py --budgets 512,2048 --rate 0.8 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from engine_throughput import free_port, isolate, server, sovllm_api_key

METRICS = (
    ("ttft", "p50"),
    ("ttft", "p95"),
    ("tpot", "p95"),
    ("itl", "p99"),
)


def start(stack: contextlib.ExitStack, tmp: Path, budget: int, threads: int) -> tuple[str, str]:
    """A `sovllm serve` with this step budget: its base URL and a user key."""
    port = free_port()
    env = dict(os.environ)
    env.update(
        SOVLLM_DATA_DIR=str(tmp / f"data-{budget}"),
        SOVLLM_ENGINE__SLOTS="32",
        SOVLLM_ENGINE__CONTEXT_PER_SLOT="1024",
        SOVLLM_ENGINE__THREADS=str(threads),
        SOVLLM_ENGINE__STEP_TOKENS=str(budget),
        SOVLLM_LOG_LEVEL="warning",
    )
    py = sys.executable
    headers = sovllm_api_key(py, env) or {}
    cmd = [py, "-m", "sovllm", "serve", "--port", str(port)]
    base = stack.enter_context(
        server(cmd, env, port, "/ready", tmp / f"sovllm-{budget}.log", f"sovllm {budget}")
    )
    return base, headers.get("Authorization", "").removeprefix("Bearer ")


def bench(base: str, key: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """One `sovllm bench` run; the summary of its one load level."""
    cmd = [
        sys.executable,
        "-m",
        "sovllm",
        "bench",
        "--url",
        base + "/v1",
        "--rate",
        str(args.rate),
        "--prompt-tokens",
        args.prompt_tokens,
        "--output-tokens",
        str(args.output_tokens),
        "--duration",
        str(args.duration),
        "--seed",
        str(seed),
        "--json",
    ]
    env = {**os.environ, "SOVLLM_API_KEY": key}
    done = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=args.duration * 4 + 300
    )
    if done.returncode != 0:
        raise RuntimeError(f"sovllm bench failed ({done.returncode}): {done.stderr[-2000:]}")
    summary: dict[str, Any] | None = json.loads(done.stdout)["summary"]
    if summary is None:
        raise RuntimeError(f"sovllm bench completed no run: {done.stderr[-2000:]}")
    return summary


def row(summary: dict[str, Any]) -> dict[str, float]:
    values = {f"{m} {p}": float(summary["latency_s"][m][p]) * 1000 for m, p in METRICS}
    values["out tok/s"] = float(summary["throughput"]["output_tokens_per_s"])
    requests = summary["requests"]
    values["ok"] = float(requests["ok"])
    values["failed"] = float(requests["error"] + requests["incomplete"])
    return values


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--budgets", default="512,2048", help="step_tokens values (first: baseline)")
    ap.add_argument("--rate", type=float, default=0.8, help="arrivals per second (Poisson)")
    ap.add_argument("--prompt-tokens", default="200-800", help="as `sovllm bench`")
    ap.add_argument("--output-tokens", type=int, default=128)
    ap.add_argument("--duration", type=float, default=60.0, help="measured seconds a run")
    ap.add_argument("--repeat", type=int, default=3, help="rounds, interleaved (>= 3)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", type=Path, metavar="OUT", help="write every run as JSON")
    args = ap.parse_args()
    if args.repeat < 3:
        ap.error("--repeat must be at least 3: a median and a spread need three runs")
    budgets = [int(b) for b in args.budgets.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="sovllm-step-budget-"))
    runs: dict[int, list[dict[str, float]]] = {b: [] for b in budgets}
    print(
        f"step budgets {budgets}; {args.rate} req/s Poisson, prompts {args.prompt_tokens} tokens, "
        f"{args.output_tokens} output tokens, {args.duration:g} s a run, {args.repeat} rounds, "
        f"{args.threads} threads",
        flush=True,
    )
    with contextlib.ExitStack() as stack:
        servers = {b: start(stack, tmp, b, args.threads) for b in budgets}
        for rnd in range(args.repeat):
            # The same arrivals and prompts for every budget within a round, new ones each round;
            # the order of the budgets turns each round.
            order = budgets[rnd % len(budgets) :] + budgets[: rnd % len(budgets)]
            for b in order:
                base, key = servers[b]
                isolate(base)
                values = row(bench(base, key, args, seed=1000 + rnd))
                runs[b].append(values)
                print(
                    f"round {rnd + 1} step_tokens {b}: "
                    + ", ".join(f"{k} {v:.1f}" for k, v in values.items()),
                    flush=True,
                )
        isolate(None)
    print("\nmedians over the rounds (min-max); ratio to the first budget")
    base_med = {k: statistics.median(r[k] for r in runs[budgets[0]]) for k in runs[budgets[0]][0]}
    for b in budgets:
        parts = []
        for k in runs[b][0]:
            vals = [r[k] for r in runs[b]]
            med = statistics.median(vals)
            ratio = f" x{med / base_med[k]:.2f}" if base_med[k] else ""
            parts.append(f"{k} {med:.1f} ({min(vals):.1f}-{max(vals):.1f}){ratio}")
        print(f"  step_tokens {b}: " + "; ".join(parts))
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "runs": runs})
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
