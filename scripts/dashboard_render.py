"""The Grafana dashboard (deploy/grafana/sovllm.json) rendered as one self-contained HTML page:
each panel's PromQL with Grafana's variables filled in, its series named by its legend format,
drawn with sovllm's own SVG charts (sovllm.charts) in the dashboard's grid layout (gridPos).

Grafana cannot be installed on the development machine, so scripts/dashboard_snapshot.py uses
this to show what the dashboard shows (the data and the layout), not how Grafana draws it.
Everything here is pure: the caller queries Prometheus.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sovllm.charts import CSS, Bar, Series, fmt, line_chart, stacked_bars

GRID_COLUMNS = 24
CELL_H, GAP = 30, 8
"""Grafana's grid: 24 columns, 30 px rows, 8 px between cells."""
PAGE_PAD = 16
NOTE_H = 20
"""The line under a panel that says what its data is (e.g. estimated)."""
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
UNITS: dict[str, tuple[str, float]] = {
    # Grafana unit id -> (axis label, factor applied to the values)
    "s": ("seconds", 1.0),
    "percentunit": ("%", 100.0),
    "reqps": ("requests/s", 1.0),
    "watt": ("W (J/s)", 1.0),
    "kwatth": ("kWh", 1.0),
    "short": ("", 1.0),
}

Target = list[Series]
"""One query's series: (legend, [(seconds since the start, value)])."""


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """`$name` and `${name}` replaced by their values; a variable not given is an error, so
    no query reaches Prometheus with a `$` left in it."""

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in variables:
            raise ValueError(f"no value for the dashboard variable ${name} in {expr!r}")
        return variables[name]

    return VARIABLE.sub(value, expr)


def rate_interval(step_s: float, scrape_s: float) -> str:
    """Grafana's `$__rate_interval`: max($__interval + scrape interval, 4 * scrape interval)."""
    return f"{math.ceil(max(step_s + scrape_s, 4 * scrape_s))}s"


def legend(fmt_: str, labels: Mapping[str, str]) -> str:
    """A series' name from the target's legendFormat (`{{label}}`), as Grafana names it; with no
    format, the labels themselves."""
    if not fmt_:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    return LEGEND.sub(lambda m: labels.get(m.group(1), ""), fmt_).strip()


def grid_area(pos: Mapping[str, int]) -> str:
    """The CSS grid placement of a panel's gridPos (x, y, w, h in Grafana's grid units)."""
    x, y, w, h = pos["x"], pos["y"], pos["w"], pos["h"]
    if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > GRID_COLUMNS:
        raise ValueError(f"gridPos {dict(pos)} is outside Grafana's 24-column grid")
    return f"grid-column:{x + 1} / span {w};grid-row:{y + 1} / span {h}"


def page_size(panels: Sequence[Mapping[str, Any]], width: int) -> tuple[int, int]:
    """Window size (px) that shows the whole grid: the bottom of the lowest panel, plus the
    page's header."""
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    return width, 2 * PAGE_PAD + 90 + rows * (CELL_H + GAP)


def last_value(series: Series) -> float | None:
    """The last finite value of a series (Grafana's default reduction, "last *")."""
    finite = [v for _, v in series[1] if math.isfinite(v)]
    return finite[-1] if finite else None


def _unit(panel: Mapping[str, Any]) -> tuple[str, float]:
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
    return UNITS.get(unit, (unit, 1.0))


def _scaled(targets: Sequence[Target], factor: float) -> list[Series]:
    return [(name, [(t, v * factor) for t, v in pts]) for target in targets for name, pts in target]


def _stat(panel: Mapping[str, Any], targets: Sequence[Target]) -> str:
    label, factor = _unit(panel)
    cells = []
    for name, pts in _scaled(targets, factor):
        value = last_value((name, pts))
        shown = "no data" if value is None else fmt(value) + (f" {label}" if label else "")
        cells.append(f'<div class="stat"><b>{html.escape(shown)}</b>{html.escape(name)}</div>')
    return f"<h3>{html.escape(panel['title'])}</h3><div class=stats>{''.join(cells)}</div>"


def _bars(panel: Mapping[str, Any], targets: Sequence[Target], width: int) -> str:
    label, factor = _unit(panel)
    bars = []
    for name, pts in _scaled(targets, factor):
        value = last_value((name, pts))
        if value is not None:
            bars.append(Bar(name, [(name, value)]))
    return stacked_bars(panel["title"], bars, label, width=width, xmlns=False)


def panel_html(
    panel: Mapping[str, Any],
    targets: Sequence[Target],
    xlabel: str,
    size: tuple[int, int],
    note: str = "",
) -> str:
    """One panel: a row header, a time series, a stat (big numbers) or a bar gauge."""
    if panel["type"] == "row":
        return f"<h2>{html.escape(panel['title'])}</h2>"
    if note:
        size = (size[0], size[1] - NOTE_H)
    if panel["type"] == "stat":
        body = _stat(panel, targets)
    elif panel["type"] == "bargauge":
        body = _bars(panel, targets, size[0])
    else:
        label, factor = _unit(panel)
        series = _scaled(targets, factor)
        body = line_chart(panel["title"], series, xlabel, label, xmlns=False, size=size)
    if note:
        body = f'<div style="height:calc(100% - {NOTE_H}px)">{body}</div>'
        body += f'<p class="note">{html.escape(note)}</p>'
    return body


PAGE_CSS = (
    CSS
    + f"""
body{{max-width:none;margin:0;padding:{PAGE_PAD}px;background:#fff}}
header{{height:74px}}header h1{{margin:0 0 4px}}header p{{margin:0;color:#555;font-size:13px}}
.dash{{display:grid;grid-template-columns:repeat({GRID_COLUMNS},1fr);
grid-auto-rows:{CELL_H}px;gap:{GAP}px}}
.panel{{border:1px solid #ddd;border-radius:3px;overflow:hidden;position:relative}}
.row h2{{margin:4px 0 0;border:none;font-size:16px}}
figure{{margin:0;height:100%}}figure svg{{width:100%;height:100%}}
h3{{font-size:13px;text-align:center;margin:6px 0}}
.stats{{display:flex;justify-content:space-around;align-items:center;height:80%}}
.stat{{text-align:center;color:#555}}.stat b{{display:block;font-size:40px;color:#1a7f37}}
.note{{height:{NOTE_H}px;box-sizing:border-box;margin:0;padding:2px 6px;font-size:12px;
background:#fff3cd}}
"""
)


def page(
    panels: Sequence[Mapping[str, Any]],
    data: Mapping[int, Sequence[Target]],
    title: str,
    subtitle: str,
    xlabel: str,
    width: int,
    notes: Mapping[int, str] | None = None,
) -> str:
    """The whole dashboard as one HTML page (no script, nothing fetched). `data` maps a panel's
    id to its targets' series; `notes` a panel's id to a line shown under it."""
    column = (width - 2 * PAGE_PAD - (GRID_COLUMNS - 1) * GAP) / GRID_COLUMNS
    cells = []
    for p in panels:
        pos = p["gridPos"]
        size = (
            round(pos["w"] * column + (pos["w"] - 1) * GAP),
            pos["h"] * CELL_H + (pos["h"] - 1) * GAP,
        )
        kind = "row" if p["type"] == "row" else "panel"
        inner = panel_html(p, data.get(p["id"], []), xlabel, size, (notes or {}).get(p["id"], ""))
        cells.append(f'<div class="{kind}" style="{grid_area(pos)}">{inner}</div>')
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>{PAGE_CSS}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>"
        f'<div class="dash">{"".join(cells)}</div></body></html>'
    )
