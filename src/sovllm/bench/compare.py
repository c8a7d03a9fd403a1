"""`--compare-plan`: what the planner predicts for the same workload, beside what was measured,
with the error of each prediction. The planner is called in process with the bench's own
lengths and load; the equivalent `sovllm plan predict` command is recorded for reproduction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from sovllm.bench.energy import predicted_per_token
from sovllm.planner.errors import ScenarioError
from sovllm.planner.workload import Lengths

if TYPE_CHECKING:
    from sovllm.bench.session import Session
    from sovllm.planner.predict import Scenario

# (row name, path in `plan predict --json`, path in the bench summary)
ROWS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("TTFT p50 (s)", ("ttft_s", "p50"), ("latency_s", "ttft", "p50")),
    ("TTFT p95 (s)", ("ttft_s", "p95"), ("latency_s", "ttft", "p95")),
    ("TPOT p50 (s)", ("tpot_s", "p50"), ("latency_s", "tpot", "p50")),
    ("output tokens/s", ("output_tokens_per_s",), ("throughput", "output_tokens_per_s")),
    ("requests/s", ("requests_per_s",), ("throughput", "requests_per_s")),
)
# Only where the server reports energy (bench/energy.py).
ENERGY_ROW = (
    "joules/output token",
    ("joules_per_output_token",),
    ("energy", "joules_per_output_token"),
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
    energy = [ENERGY_ROW] if "energy" in summary else []
    for name, plan_path, bench_path in (*ROWS, *energy):
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


def scenario(session: Session, hardware: str, plan_model: str | None) -> Scenario:
    """The planner's scenario of what this bench ran: the same model, lengths and load (a
    lognormal stays a lognormal), on `hardware`. Raises PlanUnavailable saying why not."""
    from sovllm.planner.catalog import get_engine, get_hardware, get_model
    from sovllm.planner.errors import PlannerError
    from sovllm.planner.predict import Scenario

    o = session.options
    main = session.main
    assert main is not None
    load = main.result.load
    if load.kind == "replay":
        raise PlanUnavailable("the planner has no model of a replayed trace")
    prompt = o.workload.prompt
    if load.kind == "users" and load.turns > 1:
        # Conversations resend their history: give the planner the prompts the server saw.
        seen = main.summary["tokens"]["prompt"]
        if seen["count"]:
            prompt = Lengths(int(seen["min"]), int(seen["max"]))
    cached = main.summary["tokens"].get("cached_prompt_fraction") or 0.0
    name = plan_model or (session.target.model if session.target else o.model) or ""
    try:
        model = get_model(name)
        s = Scenario(
            model=model,
            hw=get_hardware(hardware),
            engine=get_engine("llamacpp" if hardware == "cpu-local" else "vllm"),
            precision=model.file_precision or "bf16",  # `plan predict`'s default
            tp=1,
            pp=1,
            num_gpus=1,
            prompt=prompt,
            output=o.workload.output,
            load=load,
            # What the server's prefix cache saved: the planner prefills only the rest.
            cached_fraction=round(min(cached, 0.99), 3),
        )
        s.check()
    except (PlannerError, ScenarioError) as exc:
        raise PlanUnavailable(f"the planner says: {exc}") from None
    return s


def command(s: Scenario) -> list[str]:
    """The `sovllm plan predict` command that gives the same prediction, for the record."""
    args = ["sovllm", "plan", "predict", "--model", s.model.name, "--gpu", s.hw.name]
    args += ["--engine", s.engine.name, "--input-tokens", str(s.prompt)]
    args += ["--output-tokens", str(s.output)]
    if s.cached_fraction:
        args += ["--cached-prompt-fraction", f"{s.cached_fraction:.3f}"]
    load = s.load
    if load.kind == "users":
        args += ["--users", f"{load.value:g}", "--think-time", f"{load.think_time_s:g}"]
    else:
        args += [f"--{load.kind}", f"{load.value:g}"]
    return [*args, "--json"]


def predict_doc(s: Scenario) -> dict[str, Any]:
    """What `sovllm plan predict --json` prints for the scenario, computed in process."""
    from sovllm.planner.predict import predict
    from sovllm.planner.report import predict_json
    from sovllm.planner.simulator import SimulationError

    try:
        return predict_json(predict(s))
    except SimulationError as exc:
        raise PlanUnavailable(f"the planner says: {exc}") from None


def compare(session: Session, hardware: str, plan_model: str | None) -> dict[str, Any]:
    """The comparison, or `{"error": ...}` saying why the planner could not answer."""
    main = session.main
    if main is None:
        return {"error": "no run to compare"}
    try:
        s = scenario(session, hardware, plan_model)
        prediction = predict_doc(s)
    except PlanUnavailable as exc:
        return {"hardware": hardware, "error": str(exc)}
    if prediction.get("fits") is False:
        why = prediction.get("reason") or "the model does not fit"
        return {"hardware": hardware, "command": command(s), "error": f"the planner says: {why}"}
    rate = _dig(prediction, ("output_tokens_per_s",))
    prediction["joules_per_output_token"] = predicted_per_token(s.hw.tdp_w, s.num_gpus, rate)
    out: dict[str, Any] = {
        "hardware": hardware,
        "command": command(s),
        "inputs": prediction.get("inputs"),
        "rows": rows(prediction, main.summary),
        "error_formula": "(predicted - measured) / measured x 100",
    }
    load = main.result.load
    if load.kind == "users" and load.turns > 1 and not s.cached_fraction:
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
