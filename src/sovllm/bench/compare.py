"""`--compare-plan`: what `sovllm plan predict` says for the same workload, beside what was
measured, with the error of each prediction."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from sovllm.bench.session import Session

# (row name, path in `plan predict --json`, path in the bench summary)
ROWS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("TTFT p50 (s)", ("ttft_s", "p50"), ("latency_s", "ttft", "p50")),
    ("TTFT p95 (s)", ("ttft_s", "p95"), ("latency_s", "ttft", "p95")),
    ("TPOT p50 (s)", ("tpot_s", "p50"), ("latency_s", "tpot", "p50")),
    ("output tokens/s", ("output_tokens_per_s",), ("throughput", "output_tokens_per_s")),
    ("requests/s", ("requests_per_s",), ("throughput", "requests_per_s")),
)


class PlanUnavailable(Exception):
    """The planner cannot answer for this workload or hardware."""


def _dig(doc: Any, path: tuple[str, ...]) -> float | None:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return float(doc) if isinstance(doc, int | float) else None


def error_pct(predicted: float | None, measured: float | None) -> float | None:
    """Signed error of the prediction relative to the measurement, in percent."""
    if predicted is None or measured is None or measured == 0:
        return None
    return (predicted - measured) / measured * 100


def rows(prediction: dict[str, Any], summary: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, plan_path, bench_path in ROWS:
        p, m = _dig(prediction, plan_path), _dig(summary, bench_path)
        err = error_pct(p, m)
        out.append(
            {
                "metric": name,
                "predicted": p,
                "measured": m,
                "error_pct": err,
                "ratio": None if p is None or not m else p / m,
            }
        )
    return out


def predict_args(session: Session, hardware: str, plan_model: str | None) -> list[str]:
    """The `sovllm plan predict` flags that describe what this bench ran."""
    o = session.options
    main = session.main
    assert main is not None
    load = main.result.load
    model = plan_model or (session.target.model if session.target else o.model) or ""
    prompt = f"{o.workload.prompt.lo}-{o.workload.prompt.hi}"
    if load.mode == "users" and load.turns > 1:
        # Conversations resend their history: give the planner the prompts the server saw.
        seen = main.summary["tokens"]["prompt"]
        if seen["count"]:
            prompt = f"{int(seen['min'])}-{int(seen['max'])}"
    args = [
        "--model",
        model,
        "--gpu",
        hardware,
        "--engine",
        "llamacpp" if hardware == "cpu-local" else "vllm",
        "--input-tokens",
        prompt,
        "--output-tokens",
        f"{o.workload.output.lo}-{o.workload.output.hi}",
    ]
    cached = main.summary["tokens"].get("cached_prompt_fraction")
    if cached:
        # What the server's prefix cache saved: the planner prefills only the rest.
        args += ["--cached-prompt-fraction", f"{min(cached, 0.99):.3f}"]
    if load.mode == "users":
        args += ["--users", str(int(load.value)), "--think-time", f"{load.think.mean:g}"]
    elif load.mode == "rate":
        args += ["--rate", f"{load.value:g}"]
    elif load.mode == "concurrency":
        args += ["--concurrency", str(int(load.value))]
    else:
        raise PlanUnavailable("the planner has no model of a replayed trace")
    return args


def run_predict(args: list[str]) -> dict[str, Any]:
    """What `sovllm plan predict ARGS --json` prints: in process through the planner's Python
    API when it has the shape this was written against, else through the command itself."""
    try:
        return predict_in_process(args)
    except (ImportError, AttributeError, TypeError):
        # The planner is younger than its CLI contract: its internals may have moved.
        return predict_subprocess(args)


def predict_in_process(args: list[str]) -> dict[str, Any]:
    from sovllm.planner.catalog import get_engine, get_hardware, get_model
    from sovllm.planner.errors import PlannerError
    from sovllm.planner.predict import Scenario, predict
    from sovllm.planner.report import predict_json
    from sovllm.planner.workload import Lengths, Load

    flags = dict(zip(args[::2], args[1::2], strict=True))
    if "--users" in flags:
        load = Load("users", float(flags["--users"]), float(flags["--think-time"]))
    elif "--rate" in flags:
        load = Load("rate", float(flags["--rate"]))
    else:
        load = Load("concurrency", float(flags["--concurrency"]))
    try:
        model = get_model(flags["--model"])
        scenario = Scenario(
            model=model,
            hw=get_hardware(flags["--gpu"]),
            engine=get_engine(flags["--engine"]),
            precision=model.file_precision or "bf16",  # `plan predict`'s default
            tp=1,
            pp=1,
            num_gpus=1,
            prompt=Lengths.parse(flags["--input-tokens"]),
            output=Lengths.parse(flags["--output-tokens"]),
            load=load,
            cached_fraction=float(flags.get("--cached-prompt-fraction", 0.0)),
        )
        doc: dict[str, Any] = predict_json(predict(scenario))
    except (PlannerError, ValueError) as exc:
        raise PlanUnavailable(f"the planner says: {exc}") from None
    return doc


def predict_subprocess(args: list[str]) -> dict[str, Any]:
    """`sovllm plan predict ... --json`, the planner's documented interface (issue #3)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "sovllm", "plan", "predict", *args, "--json"],
            capture_output=True,
            text=True,
            timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PlanUnavailable(f"`sovllm plan predict` did not run: {exc}") from None
    if proc.returncode != 0:
        raise PlanUnavailable(
            f"`sovllm plan predict` failed: {_message(proc.stderr or proc.stdout)}"
        )
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        raise PlanUnavailable("`sovllm plan predict --json` printed no JSON") from None
    if not isinstance(doc, dict):
        raise PlanUnavailable("`sovllm plan predict --json` printed no JSON object")
    return doc


def _message(text: str) -> str:
    """The planner's error without rich's box and usage banner, on one line."""
    flat = re.sub(r"[│╭╮╰╯─]+", " ", text)
    flat = re.sub(r"\s+", " ", flat).strip()
    _, sep, tail = flat.partition("Error ")
    return (tail if sep else flat)[-400:] or "no message"


def compare(session: Session, hardware: str, plan_model: str | None) -> dict[str, Any]:
    """The comparison, or `{"error": ...}` saying why the planner could not answer."""
    main = session.main
    if main is None:
        return {"error": "no run to compare"}
    try:
        args = predict_args(session, hardware, plan_model)
        prediction = run_predict(args)
    except PlanUnavailable as exc:
        return {"hardware": hardware, "error": str(exc)}
    if prediction.get("fits") is False:
        why = prediction.get("reason") or "the model does not fit"
        return {"hardware": hardware, "command": args, "error": f"the planner says: {why}"}
    out: dict[str, Any] = {
        "hardware": hardware,
        "command": ["sovllm", "plan", "predict", *args, "--json"],
        "rows": rows(prediction, main.summary),
        "error_formula": "(predicted - measured) / measured x 100",
    }
    load = main.result.load
    if load.mode == "users" and load.turns > 1 and "--cached-prompt-fraction" not in args:
        out["note"] = (
            "the server reported no prefix-cache hits (usage.prompt_tokens_details.cached_tokens; "
            "vLLM sends it only with --enable-prompt-tokens-details): the planner prefilled every "
            "resent history, so its TTFT is pessimistic if the server caches prefixes"
        )
    return out


def print_compare(console: Console, cmp: dict[str, Any]) -> None:
    if cmp.get("error"):
        console.print(f"[yellow]--compare-plan: {cmp['error']}[/]", highlight=False)
        return
    t = Table(title=f"Plan ({cmp['hardware']}) vs measured", title_justify="left")
    for col in ("metric", "predicted", "measured", "error"):
        t.add_column(col, justify="right" if col != "metric" else "left")
    for row in cmp["rows"]:
        p, m, e = row["predicted"], row["measured"], row["error_pct"]
        t.add_row(
            row["metric"],
            "-" if p is None else f"{p:.4g}",
            "-" if m is None else f"{m:.4g}",
            "-" if e is None else f"{e:+.1f}%",
        )
    console.print(t)
    console.print(f"error = {cmp['error_formula']}", style="dim")
    if cmp.get("note"):
        console.print(f"[yellow]note: {cmp['note']}[/]", highlight=False)
