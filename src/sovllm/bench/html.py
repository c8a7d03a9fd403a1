"""A self-contained HTML report: inline CSS and SVG, no script, nothing fetched, so it opens
offline and can be attached to an audit file as it is."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from typing import Any

from sovllm.bench import metrics
from sovllm.charts import CSS as _CSS
from sovllm.charts import Series, line_chart


def cdf_points(values: Sequence[float], max_points: int = 300) -> list[tuple[float, float]]:
    ordered = sorted(v for v in values if math.isfinite(v))
    n = len(ordered)
    if not n:
        return []
    step = max(1, n // max_points)
    pts = [(ordered[i], (i + 1) / n) for i in range(0, n, step)]
    if pts[-1][1] != 1.0:
        pts.append((ordered[-1], 1.0))
    return pts


def _ms(x: Any) -> str:
    return "-" if x is None else f"{x * 1000:,.1f}"


def _n(x: Any, d: int = 2) -> str:
    return "-" if x is None else f"{x:,.{d}f}"


def _pct(x: Any) -> str:
    return "-" if x is None else f"{x:.1%}"


def _e(x: Any) -> str:
    return html.escape(str(x))


Samples = Sequence[tuple[str, dict[str, list[float]]]]


def render(doc: dict[str, Any], samples: Samples = ()) -> str:
    """The report for a result document; `samples` are (run label, {metric: values in s})."""
    s = doc["summary"]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>sovllm bench · {_e(doc['target']['model'])}</title><style>{_CSS}</style>",
        "</head><body>",
        f"<h1>sovllm bench · {_e(doc['target']['model'])} at {_e(doc['target']['url'])}</h1>",
        f"<p>{_e(doc['started_at'])} → {_e(doc['finished_at'])} · schema "
        f"<code>{_e(doc['schema'])}</code> · {_e(doc['tool']['name'])} "
        f"{_e(doc['tool']['version'])}</p>",
    ]
    if doc["partial"]:
        parts.append("<p class='partial'>Partial report: the run was interrupted.</p>")
    if doc.get("capacity") and doc["capacity"].get("line"):
        parts.append(f"<p><strong>{_e(doc['capacity']['line'])}</strong></p>")
    if s is None:
        parts.append("<p>No run completed.</p></body></html>")
        return "".join(parts)
    parts.append(_summary_tables(doc, s))
    parts.append("<h2>Latency distributions</h2><div class='grid'>")
    for name, label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("e2e", "E2E"), ("itl", "ITL")):
        series = [
            (label, cdf_points([v * 1000 for v in values.get(name, ())]))
            for label, values in samples
        ]
        parts.append(line_chart(f"{label} CDF", series, f"{label} (ms)", "fraction of requests"))
    parts.append("</div><h2>Over time</h2><div class='grid'>")
    tl = s["timeline"]
    pts = tl["points"]
    parts.append(
        line_chart(
            f"Output throughput ({tl['bucket_s']:g}-s buckets)",
            [("output tok/s", [(p["t_s"], p["output_tokens"]) for p in pts])],
            "time since warmup (s)",
            "tokens/s",
        )
    )
    parts.append(
        line_chart(
            "Requests",
            [
                ("completed/s", [(p["t_s"], p["requests"]) for p in pts]),
                ("in flight", [(p["t_s"], p.get("in_flight", 0.0)) for p in pts]),
            ],
            "time since warmup (s)",
            "requests",
        )
    )
    parts.append("</div>")
    if doc.get("soak"):
        from sovllm.bench.soak_report import render_html

        parts.append(render_html(doc["soak"]))
    if len(doc["runs"]) > 1:
        parts.append(_levels(doc))
    parts.append(
        "<h2>Configuration</h2><pre>"
        + _e(json.dumps({"config": doc["config"], "prompts": doc["prompt_calibration"]}, indent=1))
        + "</pre>"
    )
    if doc.get("compare_plan"):
        parts.append(_compare(doc["compare_plan"]))
    parts.append("</body></html>")
    return "".join(parts)


def _summary_tables(doc: dict[str, Any], s: dict[str, Any]) -> str:
    req = s["requests"]
    rows = [
        f"<p>{_e(_label(doc))}: {req['measured']} measured requests in "
        f"{s['window']['duration_s']:.1f} s — {req['ok']} ok, {req['error']} errors, "
        f"{req['incomplete']} incomplete, {req['warmup']} warmup (not counted). "
        f"Stopped by {_e(s['stop_reason'])}.</p>",
        "<h2>Latency (ms)</h2><table><tr><th>metric</th>",
        *(f"<th>{c}</th>" for c in ("mean", "p50", "p90", "p95", "p99", "p99.9", "n")),
        "<th>formula</th></tr>",
    ]
    for name in metrics.LATENCY_METRICS:
        st = s["latency_s"][name]
        rows.append(f"<tr><td>{_e(name)}</td>")
        rows.extend(
            f"<td class='n'>{_ms(st[c])}</td>" for c in ("mean", "p50", "p90", "p95", "p99", "p999")
        )
        rows.append(f"<td class='n'>{st['count']}</td><td class='f'>")
        rows.append(f"{_e(metrics.FORMULAS[name])}</td></tr>")
    rows.append("</table><h2>Throughput</h2><table>")
    for key, value in s["throughput"].items():
        rows.append(
            f"<tr><td>{_e(key)}</td><td class='n'>{_n(value)}</td>"
            f"<td class='f'>{_e(metrics.FORMULAS[key])}</td></tr>"
        )
    slo = s["slo"]
    rows.append(
        f"<tr><td>goodput_requests_per_s</td><td class='n'>{_n(slo['goodput_requests_per_s'])}"
        f"</td><td class='f'>{_e(metrics.FORMULAS['goodput_requests_per_s'])}</td></tr>"
        f"<tr><td>slo_attainment</td><td class='n'>"
        f"{_pct(slo['attainment'])}"
        f"</td><td class='f'>{_e(metrics.FORMULAS['slo_attainment'])}</td></tr></table>"
    )
    if slo["terms"]:
        rows.append("<h2>SLO</h2><table><tr><th>term</th><th>limit ms</th><th>measured ms</th>")
        rows.append("<th>met</th></tr>")
        for t in slo["terms"]:
            cls, word = ("ok", "yes") if t["met"] else ("bad", "no")
            rows.append(
                f"<tr><td>{_e(t['metric'])} {_e(t['stat'])}</td><td class='n'>"
                f"{_ms(t['limit_s'])}</td><td class='n'>{_ms(t['value_s'])}</td>"
                f"<td class='{cls}'>{word}</td></tr>"
            )
        rows.append("</table>")
    tok = s["tokens"]
    rows.append(
        "<h2>Tokens</h2><table><tr><th></th><th>mean</th><th>min</th><th>max</th>"
        "<th>matches the target</th></tr>"
    )
    for kind, check in (("prompt", "prompt_target_check"), ("output", "output_target_check")):
        st, ck = tok[kind], tok[check]
        rows.append(
            f"<tr><td>{kind} tokens</td><td class='n'>{_n(st['mean'], 1)}</td>"
            f"<td class='n'>{_n(st['min'], 0)}</td><td class='n'>{_n(st['max'], 0)}</td>"
            f"<td class='n'>{ck['exact']}/{ck['checked']} (max error {ck['max_abs_error']})"
            "</td></tr>"
        )
    rows.append(f"</table><p>Token counts from: {_e(tok['count_source'])}</p>")
    if s["errors"]:
        rows.append("<h2>Errors</h2><table><tr><th>type</th><th>count</th></tr>")
        rows.extend(
            f"<tr><td>{_e(k)}</td><td class='n'>{v}</td></tr>" for k, v in s["errors"].items()
        )
        rows.append("</table>")
    return "".join(rows)


def _label(doc: dict[str, Any]) -> str:
    for run in doc["runs"]:
        if run["summary"] is doc["summary"] or run["summary"]["load"] == doc["summary"]["load"]:
            return str(run["label"])
    return ""


def _levels(doc: dict[str, Any]) -> str:
    runs = doc["runs"]
    unit = {"users": "users", "rate": "requests/s", "concurrency": "in flight"}.get(
        doc["config"]["load"]["mode"], "load"
    )
    by_value = sorted(runs, key=lambda r: r["value"])
    ttft = [
        (r["value"], (r["summary"]["latency_s"]["ttft"]["p95"] or math.nan) * 1000)
        for r in by_value
    ]
    tpot = [
        (r["value"], (r["summary"]["latency_s"]["tpot"]["p95"] or math.nan) * 1000)
        for r in by_value
    ]
    thr = [(r["value"], r["summary"]["throughput"]["output_tokens_per_s"]) for r in by_value]
    good = [(r["value"], r["summary"]["slo"]["goodput_requests_per_s"]) for r in by_value]
    series: list[Series] = [("TTFT p95", ttft), ("TPOT p95", tpot)]
    limits = [t for t in doc["config"]["slo"] if t["metric"] in ("ttft", "tpot")]
    for t in limits:
        xs = [v for v, _ in ttft] or [0.0]
        series.append(
            (
                f"SLO {t['metric']} {t['stat']}",
                [(min(xs), t["limit_s"] * 1000), (max(xs), t["limit_s"] * 1000)],
            )
        )
    return (
        "<h2>Against load</h2><div class='grid'>"
        + line_chart("Latency p95 vs load", series, unit, "ms", markers=True)
        + line_chart(
            "Throughput vs load",
            [("output tok/s", thr)],
            unit,
            "tokens/s",
            markers=True,
        )
        + line_chart("Goodput vs load", [("goodput req/s", good)], unit, "req/s", markers=True)
        + "</div>"
    )


def _compare(cmp: dict[str, Any]) -> str:
    if cmp.get("error"):
        return f"<h2>Plan vs measured</h2><p>{_e(cmp['error'])}</p>"
    rows = ["<h2>Plan vs measured</h2><table><tr><th>metric</th><th>predicted</th>"]
    rows.append("<th>measured</th><th>error</th></tr>")
    for row in cmp.get("rows", []):
        err = row.get("error_pct")
        rows.append(
            f"<tr><td>{_e(row['metric'])}</td><td class='n'>{_n(row['predicted'], 3)}</td>"
            f"<td class='n'>{_n(row['measured'], 3)}</td>"
            f"<td class='n'>{'-' if err is None else f'{err:+.1f}%'}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)
