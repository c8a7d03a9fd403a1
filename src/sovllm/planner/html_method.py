"""The `plan size` page's account of its method: the assumptions it sized with (and the flag
that sets each), and the validation error of the engine profile it used."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sovllm.planner.catalog import get_engine, get_hardware
from sovllm.planner.cost import CostParams
from sovllm.planner.errors import PlannerError
from sovllm.planner.html_fmt import X, esc, num, table
from sovllm.planner.search import SWEEP_FACTORS
from sovllm.planner.validation import METRIC_GROUP, RowError, summarise


def assumptions(doc: dict[str, Any], cands: list[dict[str, Any]], params: CostParams) -> str:
    inp = doc["inputs"]
    p = params
    cur = esc(p.currency)

    def price(v: float | None) -> str:
        return "the catalog's (USD, converted)" if v is None else f"{v:,.2f} {cur}"

    recorded = bool(doc.get("traffic"))
    from_file = "from file" in str(inp["prompt_tokens"])
    lengths_by = "--from-usage" if recorded else "--lengths-from" if from_file else ""
    rows = [
        ["users", str(inp["users"]), "--from-usage" if recorded else "--users"],
        ["prompt tokens", esc(inp["prompt_tokens"]), lengths_by or "--prompt-tokens"],
        ["output tokens", esc(inp["output_tokens"]), lengths_by or "--output-tokens"],
        [
            "think time between requests",
            f"{inp['think_time_s']:g} s",
            "--from-usage" if recorded else "--think-time",
        ],
        ["precisions tried", esc(", ".join(inp["precisions"])), "--precisions"],
        [
            "latency curves at",
            esc(", ".join(f"{f:g}" for f in SWEEP_FACTORS)) + f" {X} the users",
            "fixed",
        ],
        ["currency per USD (catalog prices)", f"{p.usd_rate:g}", "--usd-rate"],
        ["purchase price per GPU", price(p.gpu_price), "--gpu-price"],
        ["cloud price per GPU-hour", price(p.cloud_price), "--cloud-price"],
        ["purchase spread over", f"{p.years:g} years (straight line)", "--years"],
        ["server per 8 GPUs", f"{p.server_overhead:.0%} of the GPUs' price", "fixed"],
        ["electricity", f"{p.electricity_price:g} {cur} per kWh", "--electricity-price"],
        ["PUE (facility power / IT power)", f"{p.pue:g}", "--pue"],
        ["GPU draw under load", f"{p.load_power_fraction:.0%} of TDP", "fixed"],
        ["host power per GPU (CPUs, fans, NICs)", f"{p.host_power_w_per_gpu:g} W", "fixed"],
        ["hosting per server", f"{p.hosting_per_year:,.0f} {cur} per year", "--hosting-per-year"],
        ["staff", f"{p.staff_per_year:,.0f} {cur} per year", "--staff-per-year"],
        ["grid intensity", f"{p.grid_kg_per_kwh:g} kg CO2e per kWh", "--grid-intensity"],
    ]
    try:
        eng = get_engine(inp["engine"])
        rows.append(["engine factors", esc(eng.source), "--engine"])
        if eng.fitted_on:
            fitted = "; ".join(f"{k} on row {v}" for k, v in eng.fitted_on.items())
            rows.append(["engine factors fitted", esc(fitted), "--engine"])
    except PlannerError:
        pass  # a document from another catalog: its name and provenance are printed above
    for gpu in dict.fromkeys(c["gpu"] for c in cands):
        try:
            hw = get_hardware(gpu)
        except PlannerError:
            continue
        rows.append([f"{esc(gpu)}", esc(f"{hw.source} ({hw.date})"), "--gpus"])
    for row in rows:  # the flag (or "fixed") as code, one unbroken word
        row[2] = f"<code>{esc(row[2])}</code>"
    return "<h2>Assumptions</h2>" + table(["assumption", "value", "set by"], rows, text_cols=3)


def validation_section(engine: str, errors: Sequence[RowError]) -> str:
    head = f"<h2>Validation of the engine profile <code>{esc(engine)}</code></h2>"
    if not errors:
        return (
            head + "<p class='bad'>No measured row uses this profile: its predictions are "
            "unvalidated.</p>"
        )
    summary = [
        [
            esc(s.group),
            esc(s.subset),
            str(s.rows),
            num(s.median_abs_pct, 1),
            num(s.max_abs_pct, 1),
            f"{s.worst_ratio:.2f}{X}",
        ]
        for s in summarise(list(errors))
        if s.dataset == "all" and s.subset != "all"
    ]
    rows = [
        [
            esc(e.row.id),
            esc(METRIC_GROUP[e.row.metric]),
            f"{e.row.value:.4g}",
            f"{e.predicted:.4g}",
            f"{e.error_pct:+.1f}",
            "fitted" if e.fitted else "",
            esc(e.read_as),
        ]
        for e in errors
    ]
    return (
        head + "<p class='note'>Absolute % error against published measurements; a fitted row was "
        "used to set one factor, the held-out rows test the model. Sources: "
        "<code>sovllm plan validate --json</code>.</p>"
        + table(
            ["metric", "subset", "rows", "median %", "max %", "worst ratio"], summary, text_cols=2
        )
        + f"<details><summary>{len(rows)} rows</summary>"
        + table(
            ["row", "metric", "measured", "predicted", "error %", "", "read as"], rows, text_cols=2
        )
        + "</details>"
    )
