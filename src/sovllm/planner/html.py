"""`sovllm plan size --html`: the sizing as one self-contained page (inline CSS and SVG, no
script, no URL, nothing fetched), for people who would rather look than read. Every figure
comes from the `plan size --json` document, so the page and the JSON cannot disagree."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from sovllm.charts import CSS, Bar, line_chart, stacked_bars
from sovllm.planner.cost import CostParams
from sovllm.planner.html_fmt import X, esc, money, num, table
from sovllm.planner.html_method import assumptions, validation_section
from sovllm.planner.search import SWEEP_FACTORS, SweepPoint
from sovllm.planner.validation import RowError

# The recommendation and the cheapest alternatives: enough to see the trade-off, few enough
# that the curves stay apart.
MAX_CHARTED = 4
# Latency axes end at this multiple of the SLO; a runaway queue beyond it is marked, not drawn.
Y_SCALE_SLO = 3.0

_PAGE_CSS = (
    CSS
    + """
body{padding:0 16px;box-sizing:border-box}code{white-space:nowrap}
.lg{font-size:11px}.note{color:#555;font-size:13px}details{margin:8px 0}
.best{font-size:15px;background:#eef6ee;padding:8px 12px;border-left:4px solid #1a7f37}
"""
)


def charted(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The candidates the page draws, in the JSON's order: the recommendation first."""
    rec = doc.get("recommendation")
    return ([rec] if rec else []) + list(doc.get("alternatives", []))[: MAX_CHARTED - 1]


def label(c: dict[str, Any]) -> str:
    return f"{c['gpu']} {c['precision']} TP={c['tp']} {X}{c['replicas']}"


def render(
    doc: dict[str, Any],
    sweeps: Sequence[Sequence[SweepPoint]],
    validation: Sequence[RowError],
    params: CostParams,
) -> str:
    """The page for a `plan size` document. `sweeps[i]`: the latency of charted(doc)[i] at
    several user counts; `validation`: the errors of the engine profile's rows."""
    inp = doc["inputs"]
    cands = charted(doc)
    title = f"sovllm plan size · {inp['model']} for {inp['users']} users"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title><style>{_PAGE_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p>Prompts {esc(inp['prompt_tokens'])} tokens, answers {esc(inp['output_tokens'])} "
        f"tokens, think time {inp['think_time_s']:g} s"
        + (
            f", {inp['cached_prompt_fraction']:.0%} of each prompt in the prefix cache"
            if inp["cached_prompt_fraction"]
            else ""
        )
        + f". SLO: TTFT p95 ≤ {inp['ttft_p95_s']:g} s, TPOT p95 ≤ "
        f"{inp['tpot_p95_s'] * 1000:g} ms. Engine profile <code>{esc(inp['engine'])}</code>"
        + (f" ({esc(inp['engine_provenance'])})" if inp.get("engine_provenance") else "")
        + ".</p>",
    ]
    if doc.get("traffic"):
        t = doc["traffic"]
        parts.append(
            f"<p class='note'>Sized from this service's recorded traffic, "
            f"{esc(t['first_arrival'])} to {esc(t['last_arrival'])}: {t['requests']} requests; "
            f"peak hour from {esc(t['peak']['start'])}.</p>"
        )
    parts.append(_verdict(doc))
    if cands:
        parts.append(_candidates(cands))
        parts.append(_latency(inp, cands, sweeps))
        parts.append(_memory(cands))
        parts.append(_cost(cands))
        parts.append(_energy(cands, params))
    parts.append(_model_memory(doc))
    parts.append(assumptions(doc, cands, params))
    parts.append(validation_section(inp["engine"], validation))
    parts.append(_rejected(doc))
    parts.append("</body></html>")
    return "".join(parts)


def _verdict(doc: dict[str, Any]) -> str:
    rec = doc.get("recommendation")
    if rec is None:
        return "<p class='best bad'>No configuration meets the SLO.</p>"
    cost = rec["cost"]
    return (
        f"<p class='best'><strong>Buy {rec['gpus']} {X} {esc(rec['gpu'])}</strong>: "
        f"{esc(rec['precision'])}, TP={rec['tp']}, {rec['replicas']} replica(s) of up to "
        f"{rec['users_per_replica']} users. TTFT p95 {num(rec['ttft_s']['p95'], 2)} s, TPOT p95 "
        f"{num(rec['tpot_s']['p95'] * 1000, 0)} ms. On premise {money(cost['onprem_per_year'])} "
        f"{esc(cost['currency'])}/year against {money(cost['cloud_per_year'])} in the cloud.</p>"
    )


def _candidates(cands: list[dict[str, Any]]) -> str:
    cur = esc(cands[0]["cost"]["currency"])
    head = ["configuration", "GPUs", "users/replica", "TTFT p95 s", "TPOT p95 ms", "tok/s"]
    head += [f"on premise {cur}/year", f"cloud {cur}/year"]
    rows = [
        [
            esc(label(c)) + (" (chosen)" if i == 0 else ""),
            str(c["gpus"]),
            str(c["users_per_replica"]),
            num(c["ttft_s"]["p95"], 2),
            num(c["tpot_s"]["p95"] * 1000, 0),
            num(c["output_tokens_per_s"], 0),
            money(c["cost"]["onprem_per_year"]),
            money(c["cost"]["cloud_per_year"]),
        ]
        for i, c in enumerate(cands)
    ]
    return "<h2>Candidates (cheapest first)</h2>" + table(head, rows)


def _latency(
    inp: dict[str, Any], cands: list[dict[str, Any]], sweeps: Sequence[Sequence[SweepPoint]]
) -> str:
    named = list(zip((label(c) for c in cands), sweeps, strict=True))
    ttft = [(n, [(float(p.users), p.ttft_p95_s) for p in s]) for n, s in named]
    tpot = [(n, [(float(p.users), p.tpot_p95_s * 1000) for p in s]) for n, s in named]
    slo_ttft, slo_tpot = inp["ttft_p95_s"], inp["tpot_p95_s"] * 1000
    lo, hi = min(SWEEP_FACTORS), max(SWEEP_FACTORS)
    return (
        "<h2>Latency against the number of users</h2>"
        f"<p class='note'>Each configuration as deployed (its replicas), simulated at {lo:g}{X} to "
        f"{hi:g}{X} the {inp['users']} users sized for; the dashed line is the SLO. Where a curve "
        "crosses it is the most users that configuration serves; past the knee the queue "
        "grows without bound.</p><div class='grid'>"
        + line_chart(
            "TTFT p95 against users",
            ttft,
            "users",
            "TTFT p95 (s)",
            markers=True,
            hlines=[(f"SLO {slo_ttft:g} s", slo_ttft)],
            y_max=Y_SCALE_SLO * slo_ttft,
            xmlns=False,
        )
        + line_chart(
            "TPOT p95 against users",
            tpot,
            "users",
            "TPOT p95 (ms)",
            markers=True,
            hlines=[(f"SLO {slo_tpot:g} ms", slo_tpot)],
            y_max=Y_SCALE_SLO * slo_tpot,
            xmlns=False,
        )
        + "</div>"
    )


MEMORY_PARTS = (
    ("weights", "weights_gb"),
    ("KV cache", "kv_in_use_gb"),
    ("activations", "activations_gb"),
    ("overhead", "overhead_gb"),
)


def _memory(cands: list[dict[str, Any]]) -> str:
    bars = [
        Bar(
            label(c),
            [(name, float(c["memory"][key])) for name, key in MEMORY_PARTS],
            [("usable", float(c["memory"]["usable_gb"]))],
        )
        for c in cands
    ]
    head = ["configuration", *(n for n, _ in MEMORY_PARTS), "per GPU", "usable", "GPU memory"]
    rows = [
        [
            esc(label(c)),
            *(num(c["memory"][key], 2) for _, key in MEMORY_PARTS),
            num(c["memory"]["per_gpu_gb"], 2),
            num(c["memory"]["usable_gb"], 2),
            num(c["memory"]["gpu_memory_gb"], 1),
        ]
        for c in cands
    ]
    return (
        "<h2>Memory per GPU</h2><p class='note'>At the sized load: the KV cache the resident "
        "sequences hold at once; usable is the engine's share of the GPU's memory. GB are "
        "10<sup>9</sup> bytes.</p>"
        + stacked_bars("Memory per GPU (GB)", bars, "GB per GPU", xmlns=False)
        + table(head, rows)
    )


COST_PARTS = ("amortisation", "power", "hosting", "staff")


def _year_item(key: str, c: dict[str, Any]) -> str:
    return money(c["cost"]["onprem_breakdown_per_year"][key])


def _cost(cands: list[dict[str, Any]]) -> str:
    cur = cands[0]["cost"]["currency"]
    bars: list[Bar] = []
    for c in cands:
        year = c["cost"]["onprem_breakdown_per_year"]
        bars.append(Bar(f"{label(c)} on premise", [(k, float(year[k])) for k in COST_PARTS]))
        bars.append(Bar(f"{label(c)} cloud", [("cloud", float(c["cost"]["cloud_per_year"]))]))
    items: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        (f"on premise: {k}", partial(_year_item, k)) for k in COST_PARTS
    ]
    items += [
        ("<strong>on premise per year</strong>", lambda c: money(c["cost"]["onprem_per_year"])),
        ("cloud per year", lambda c: money(c["cost"]["cloud_per_year"])),
        ("purchase (GPUs and servers)", lambda c: money(c["cost"]["purchase"])),
        ("servers", lambda c: str(c["cost"]["servers"])),
        (
            "on premise per million output tokens",
            lambda c: num(c["cost"]["onprem_per_million_tokens"], 2),
        ),
        (
            "cloud per million output tokens",
            lambda c: num(c["cost"]["cloud_per_million_tokens"], 2),
        ),
    ]
    rows = [[name, *(f(c) for c in cands)] for name, f in items]
    years = cands[0]["cost"]["years"]
    return (
        f"<h2>Cost per year ({esc(cur)})</h2><p class='note'>On premise: the purchase spread "
        f"over {years:g} years, power at the wall, hosting and staff; cloud: the same GPUs "
        "rented around the clock.</p>"
        + stacked_bars(f"Cost per year ({cur})", bars, f"{cur} per year", xmlns=False)
        + table([f"{esc(cur)} per year", *(esc(label(c)) for c in cands)], rows)
    )


def _energy(cands: list[dict[str, Any]], params: CostParams) -> str:
    items = [
        ("power at the wall (kW)", "power_kw", 2),
        ("kWh per day", "kwh_per_day", 1),
        ("kg CO2e per day", "kg_co2e_per_day", 1),
        ("answers per day", "answers_per_day", 0),
        ("kWh per 1,000 answers", "kwh_per_1000_answers", 3),
        ("kg CO2e per 1,000 answers", "kg_co2e_per_1000_answers", 3),
        ("kWh per million output tokens", "kwh_per_million_tokens", 3),
        ("kg CO2e per million output tokens", "kg_co2e_per_million_tokens", 3),
    ]
    rows = [[name, *(num(c["energy"][key], digits) for c in cands)] for name, key, digits in items]
    return (
        f"<h2>Energy and CO2e</h2><p class='note'>Around the clock at the sized load, PUE "
        f"{params.pue:g}, {params.grid_kg_per_kwh:g} kg CO2e per kWh.</p>"
        + table(["", *(esc(label(c)) for c in cands)], rows)
    )


def _model_memory(doc: dict[str, Any]) -> str:
    mm = doc.get("model_memory") or {}
    if not mm:
        return ""
    head = ["precision", "weights", "KV cache", "activations", "overhead", "total"]
    keys = ("weights_gb", "kv_gb", "activations_gb", "overhead_gb", "total_gb")
    rows = [[esc(p), *(num(m[k], 1) for k in keys)] for p, m in mm.items()]
    users = doc["inputs"]["users"]
    return f"<h2>One model copy with all {users} users resident (GB)</h2>" + table(head, rows)


def _rejected(doc: dict[str, Any]) -> str:
    rej = doc.get("rejected") or []
    if not rej:
        return ""
    rows = [[esc(r["gpu"]), esc(r["precision"]), str(r["tp"]), esc(r["reason"])] for r in rej]
    return "<h2>Rejected</h2>" + table(["GPU", "precision", "TP", "reason"], rows, text_cols=4)
