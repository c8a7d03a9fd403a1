"""A self-contained HTML report: inline CSS and SVG, no script, nothing fetched, so it opens
offline and can be attached to an audit file as it is."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from typing import Any

from sovllm.bench import metrics

Series = tuple[str, Sequence[tuple[float, float]]]
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")
_W, _H = 560, 300
_M = {"l": 62, "r": 16, "t": 28, "b": 44}


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 or v == int(v) else f"{v:.3g}"


def line_chart(
    title: str,
    series: Sequence[Series],
    xlabel: str,
    ylabel: str,
    y_from_zero: bool = True,
    markers: bool = False,
) -> str:
    points = [p for _, pts in series for p in pts if all(map(math.isfinite, p))]
    if not points:
        return (
            f"<figure><figcaption>{html.escape(title)}</figcaption>"
            f'<p class="empty">no data</p></figure>'
        )
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = (0.0 if y_from_zero else min(ys)), max(ys)
    if x1 <= x0:
        x1 = x0 + 1
    if y1 <= y0:
        y1 = y0 + 1
    pw, ph = _W - _M["l"] - _M["r"], _H - _M["t"] - _M["b"]

    def sx(x: float) -> float:
        return _M["l"] + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return _M["t"] + ph - (y - y0) / (y1 - y0) * ph

    out = [
        f'<svg viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{html.escape(title)}</title>',
        f'<text x="{_W / 2}" y="16" class="t">{html.escape(title)}</text>',
    ]
    for t in _nice_ticks(x0, x1):
        if x0 <= t <= x1:
            out.append(
                f'<line x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{_M["t"]}" y2="{_M["t"] + ph}" '
                f'class="g"/><text x="{sx(t):.1f}" y="{_M["t"] + ph + 14}" class="xt">'
                f"{_fmt(t)}</text>"
            )
    for t in _nice_ticks(y0, y1):
        if y0 <= t <= y1:
            out.append(
                f'<line x1="{_M["l"]}" x2="{_M["l"] + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" '
                f'class="g"/><text x="{_M["l"] - 4}" y="{sy(t) + 4:.1f}" class="yt">'
                f"{_fmt(t)}</text>"
            )
    out.append(
        f'<rect x="{_M["l"]}" y="{_M["t"]}" width="{pw}" height="{ph}" class="frame"/>'
        f'<text x="{_M["l"] + pw / 2}" y="{_H - 6}" class="xl">{html.escape(xlabel)}</text>'
        f'<text transform="translate(14 {_M["t"] + ph / 2}) rotate(-90)" class="xl">'
        f"{html.escape(ylabel)}</text>"
    )
    for i, (name, pts) in enumerate(series):
        colour = _COLOURS[i % len(_COLOURS)]
        good = [p for p in pts if all(map(math.isfinite, p))]
        if not good:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
        if markers:
            out.extend(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>'
                for x, y in good
            )
        ly = _M["t"] + 14 + 14 * i
        out.append(
            f'<rect x="{_M["l"] + 8}" y="{ly - 8}" width="10" height="3" fill="{colour}"/>'
            f'<text x="{_M["l"] + 22}" y="{ly - 3}" class="lg">{html.escape(name)}</text>'
        )
    out.append("</svg>")
    return f"<figure>{''.join(out)}</figure>"


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


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1180px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 9px;border-bottom:1px solid #eee}
th{text-align:left;background:#f6f6f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.f{color:#666;font-size:12px}.grid{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:4px}svg text{font-size:11px;fill:#333}.t{text-anchor:middle;font-weight:600}
.xt{text-anchor:middle}.yt{text-anchor:end}.xl{text-anchor:middle}.g{stroke:#eee}
.frame{fill:none;stroke:#999}.ok{color:#1a7f37}.bad{color:#c62828}.partial{background:#fff3cd;
padding:6px 10px}code{background:#f4f4f4;padding:1px 4px}.empty{color:#999}
"""


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
