"""Inline SVG charts for the self-contained HTML reports (`sovllm bench`, `sovllm plan size`):
no script, no font or stylesheet fetched, every text escaped."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

Series = tuple[str, Sequence[tuple[float, float]]]
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")
_W, _H = 560, 300
_M = {"l": 62, "r": 16, "t": 28, "b": 44}
# The SVG namespace is a name, never fetched; a page that promises no URL at all may leave it
# out, since the HTML parser puts inline <svg> in that namespace by itself.
_XMLNS = ' xmlns="http://www.w3.org/2000/svg"'

CSS = """
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


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
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


def fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 or v == int(v) else f"{v:.3g}"


def line_chart(
    title: str,
    series: Sequence[Series],
    xlabel: str,
    ylabel: str,
    y_from_zero: bool = True,
    markers: bool = False,
    *,
    hlines: Sequence[tuple[str, float]] = (),
    y_max: float | None = None,
    xmlns: bool = True,
    size: tuple[int, int] = (_W, _H),
) -> str:
    """Lines over a shared x axis. `hlines`: (label, y) drawn dashed across the plot (limits such
    as an SLO), always inside the y range. `y_max`: values above it are drawn at the top edge
    with an open triangle, so one runaway point does not flatten the rest. `size`: the SVG's
    width and height in pixels."""
    width, height = size
    points = [p for _, pts in series for p in pts if all(map(math.isfinite, p))]
    if not points:
        return (
            f"<figure><figcaption>{html.escape(title)}</figcaption>"
            f'<p class="empty">no data</p></figure>'
        )
    xs = [p[0] for p in points]
    ys = [p[1] for p in points] + [y for _, y in hlines if math.isfinite(y)]
    x0, x1 = min(xs), max(xs)
    y0, y1 = (0.0 if y_from_zero else min(ys)), max(ys)
    clipped = y_max is not None and y1 > y_max
    if y_max is not None and clipped:
        y1 = y_max
    if x1 <= x0:
        x1 = x0 + 1
    if y1 <= y0:
        y1 = y0 + 1
    pw, ph = width - _M["l"] - _M["r"], height - _M["t"] - _M["b"]

    def sx(x: float) -> float:
        return _M["l"] + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return _M["t"] + ph - (min(y, y1) - y0) / (y1 - y0) * ph

    out = [
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img"'
        f"{_XMLNS if xmlns else ''}><title>{html.escape(title)}</title>",
        f'<text x="{width / 2}" y="16" class="t">{html.escape(title)}</text>',
    ]
    for t in nice_ticks(x0, x1):
        if x0 <= t <= x1:
            out.append(
                f'<line x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{_M["t"]}" y2="{_M["t"] + ph}" '
                f'class="g"/><text x="{sx(t):.1f}" y="{_M["t"] + ph + 14}" class="xt">'
                f"{fmt(t)}</text>"
            )
    for t in nice_ticks(y0, y1):
        if y0 <= t <= y1:
            out.append(
                f'<line x1="{_M["l"]}" x2="{_M["l"] + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" '
                f'class="g"/><text x="{_M["l"] - 4}" y="{sy(t) + 4:.1f}" class="yt">'
                f"{fmt(t)}</text>"
            )
    out.append(
        f'<rect x="{_M["l"]}" y="{_M["t"]}" width="{pw}" height="{ph}" class="frame"/>'
        f'<text x="{_M["l"] + pw / 2}" y="{height - 6}" class="xl">{html.escape(xlabel)}</text>'
        f'<text transform="translate(14 {_M["t"] + ph / 2}) rotate(-90)" class="xl">'
        f"{html.escape(ylabel)}</text>"
    )
    for label, y in hlines:
        out.append(
            f'<line x1="{_M["l"]}" x2="{_M["l"] + pw}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" '
            f'class="limit" data-value="{y:g}" stroke="#555" stroke-dasharray="6 4"/>'
            f'<text x="{_M["l"] + pw - 4}" y="{sy(y) - 4:.1f}" class="yt">'
            f"{html.escape(label)}</text>"
        )
    for i, (name, pts) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        good = [p for p in pts if all(map(math.isfinite, p))]
        if not good:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
        if markers:
            out.extend(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>'
                for x, y in good
                if not (clipped and y > y1)
            )
        if clipped:
            out.extend(
                f'<path d="M{sx(x) - 4:.1f},{sy(y) + 5:.1f}h8l-4,-8z" fill="#fff" '
                f'stroke="{colour}"><title>{html.escape(name)}: {fmt(y)} at {fmt(x)}</title>'
                "</path>"
                for x, y in good
                if y > y1
            )
        ly = _M["t"] + 14 + 14 * i
        out.append(
            f'<rect x="{_M["l"] + 8}" y="{ly - 8}" width="10" height="3" fill="{colour}"/>'
            f'<text x="{_M["l"] + 22}" y="{ly - 3}" class="lg">{html.escape(name)}</text>'
        )
    if clipped:
        out.append(
            f'<text x="{_M["l"] + pw}" y="{height - 6}" class="yt">△ above {fmt(y1)}, off the '
            "scale</text>"
        )
    out.append("</svg>")
    return f"<figure>{''.join(out)}</figure>"


@dataclass(frozen=True)
class Bar:
    """One horizontal bar: segments stacked left to right, and marks (a limit such as the usable
    memory) drawn as dashed ticks across it."""

    label: str
    segments: Sequence[tuple[str, float]]
    marks: Sequence[tuple[str, float]] = ()


_BAR_H, _BAR_GAP, _BAR_LABEL_MAX_W = 18, 20, 420


def stacked_bars(
    title: str, bars: Sequence[Bar], unit: str, *, width: int = 1100, xmlns: bool = True
) -> str:
    """Horizontal stacked bars on one scale from 0; each segment name keeps one colour across
    bars; each bar ends with its total. A segment carries its value (data-value) and a tooltip."""
    if not bars:
        return (
            f"<figure><figcaption>{html.escape(title)}</figcaption>"
            f'<p class="empty">no data</p></figure>'
        )
    names = list(dict.fromkeys(name for b in bars for name, _ in b.segments))
    colour = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(names)}
    # Room for the longest label at about 6.3 px a character of the 11 px font.
    left = min(_BAR_LABEL_MAX_W, max(80, round(6.3 * max(len(b.label) for b in bars)) + 12))
    top, right = 48, 70
    step = _BAR_H + _BAR_GAP
    height = top + step * len(bars) + 30
    totals = [sum(max(v, 0.0) for _, v in b.segments) for b in bars]
    hi = max(totals + [v for b in bars for _, v in b.marks] + [0.0])
    ticks = nice_ticks(0.0, hi if hi > 0 else 1.0)
    if len(ticks) > 1 and ticks[-1] < hi:
        ticks.append(round(2 * ticks[-1] - ticks[-2], 10))  # the axis ends on a tick
    x1 = max(ticks[-1], hi) if ticks else 1.0
    pw = width - left - right

    def sx(v: float) -> float:
        return left + v / x1 * pw

    out = [
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img"'
        f"{_XMLNS if xmlns else ''}><title>{html.escape(title)}</title>",
        f'<text x="{width / 2}" y="16" class="t">{html.escape(title)}</text>',
    ]
    lx = left
    for name in names:
        out.append(
            f'<rect x="{lx}" y="26" width="10" height="10" fill="{colour[name]}"/>'
            f'<text x="{lx + 14}" y="35" class="lg">{html.escape(name)}</text>'
        )
        lx += 24 + 7 * len(name)
    axis_y = top + step * len(bars) - _BAR_GAP / 2
    for t in ticks:
        out.append(
            f'<line x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{top - 6}" y2="{axis_y:.1f}" class="g"/>'
            f'<text x="{sx(t):.1f}" y="{axis_y + 14:.1f}" class="xt">{fmt(t)}</text>'
        )
    out.append(f'<text x="{left + pw / 2}" y="{height - 4}" class="xl">{html.escape(unit)}</text>')
    labelled: set[tuple[str, float]] = set()
    for i, (bar, total) in enumerate(zip(bars, totals, strict=True)):
        y = top + step * i
        out.append(
            f'<text x="{left - 6}" y="{y + _BAR_H / 2 + 4}" class="yt">'
            f"{html.escape(bar.label)}</text>"
        )
        x = 0.0
        for name, v in bar.segments:
            v = max(v, 0.0)
            out.append(
                f'<rect x="{sx(x):.2f}" y="{y}" width="{sx(x + v) - sx(x):.2f}" '
                f'height="{_BAR_H}" fill="{colour[name]}" class="seg" '
                f'data-name="{html.escape(name)}" data-value="{v:g}">'
                f"<title>{html.escape(name)}: {fmt(v)} {html.escape(unit)}</title></rect>"
            )
            x += v
        out.append(f'<text x="{sx(total) + 4:.1f}" y="{y + _BAR_H / 2 + 4}">{fmt(total)}</text>')
        for name, v in bar.marks:
            out.append(
                f'<line x1="{sx(v):.1f}" x2="{sx(v):.1f}" y1="{y - 4}" y2="{y + _BAR_H + 4}" '
                f'stroke="#333" stroke-dasharray="3 2" class="mark" data-value="{v:g}"/>'
            )
            if (name, v) not in labelled:  # once per value: the bars below share it
                labelled.add((name, v))
                out.append(
                    f'<text x="{sx(v):.1f}" y="{y - 6}" class="xt">'
                    f"{html.escape(name)} {fmt(v)}</text>"
                )
    out.append("</svg>")
    return f"<figure>{''.join(out)}</figure>"
