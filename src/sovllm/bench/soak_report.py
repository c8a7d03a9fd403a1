"""The soak's part of the report: its targets on the terminal, and in the HTML report the
server's memory, open files, database and WAL bytes and audit entries over time."""

from __future__ import annotations

import html
from typing import Any

from rich.console import Console

from sovllm.charts import line_chart

MIB = 1024 * 1024
X = "time since the run started (s)"


def _pts(soak: dict[str, Any], name: str, scale: float = 1.0) -> list[tuple[float, float]]:
    return [(float(t), float(v) / scale) for t, v in soak["series"].get(name, ())]


def _stops(soak: dict[str, Any]) -> str:
    spans = ", ".join(
        f"{s['start_s']:.0f} to {s['end_s'] if s['end_s'] is not None else '?'} s "
        f"({s['scope']}, {s['mode']})"
        for s in soak["stops"]
    )
    return spans or "none"


def render_html(soak: dict[str, Any]) -> str:
    e = html.escape
    growth_limit = f"{soak['plan']['max_rss_growth']:.0%}"
    rss = _pts(soak, "rss_bytes", MIB)
    window = soak["memory_window_start_s"]
    rows = ["<h2>Soak</h2><table><tr><th>target</th><th>met</th><th>measured</th></tr>"]
    for t in soak["targets"]:
        cls, word = ("ok", "yes") if t["met"] else ("bad", "no")
        rows.append(
            f"<tr><td>{e(t['name'])}</td><td class='{cls}'>{word}</td>"
            f"<td>{e(str(t['value']))}</td></tr>"
        )
    rows.append("</table><table><tr><th>outcome of the chat requests</th><th>count</th></tr>")
    rows.extend(
        f"<tr><td>{e(k)}</td><td class='n'>{v}</td></tr>" for k, v in soak["outcomes"].items()
    )
    rows.append(
        f"</table><p>Tenant <code>{e(soak['tenant'])}</code> · {soak['admin_calls']} admin "
        f"calls ({soak['admin_failures_count']} unexpected) · {soak['key_cycles']} key cycles "
        f"· stops: {e(_stops(soak))}</p><div class='grid'>"
    )
    top = max((v for _, v in rss), default=0.0)
    limit = _limit(soak)
    rows.append(
        line_chart(
            "Server resident memory",
            [("RSS", rss), ("window", [(window, 0.0), (window, top)])],
            X,
            "MiB",
            hlines=[(f"+{growth_limit} of the window's start", limit)] if limit else (),
        )
    )
    rows.append(line_chart("Server open files", [("open fds", _pts(soak, "open_fds"))], X, "fds"))
    rows.append(
        line_chart(
            "Database and WAL size",
            [("database", _pts(soak, "db_bytes", MIB)), ("WAL", _pts(soak, "wal_bytes", MIB))],
            X,
            "MiB",
        )
    )
    rows.append(line_chart("Audit log", [("entries", _pts(soak, "audit_entries"))], X, "entries"))
    rows.append("</div>")
    return "".join(rows)


def _limit(soak: dict[str, Any]) -> float | None:
    g = soak["rss_growth"]
    if g.get("from_bytes") is None:
        return None
    return float(g["from_bytes"]) * (1 + float(soak["plan"]["max_rss_growth"])) / MIB


def _fmt(name: str, v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / MIB:,.1f} MiB" if name.endswith("bytes") else f"{v:,.0f}"


def print_soak(console: Console, soak: dict[str, Any]) -> None:
    console.print(f"\n[bold]soak[/] tenant {soak['tenant']} · {soak['requests']} chat requests")
    for k, v in soak["outcomes"].items():
        console.print(f"  {k}: {v}", highlight=False)
    console.print(
        f"  admin calls: {soak['admin_calls']} ({soak['admin_failures_count']} unexpected), "
        f"key cycles: {soak['key_cycles']}, stops: {len(soak['stops'])}",
        highlight=False,
    )
    for f in soak["admin_failures"][:10]:
        console.print(
            f"    t={f['t_s']} s {f['call']} → {f['status']}: {f['note']}", highlight=False
        )
    for name, fig in soak["figures"].items():
        console.print(
            f"  {name}: start {_fmt(name, fig['start'])}, end {_fmt(name, fig['end'])}, "
            f"max {_fmt(name, fig['max'])}",
            highlight=False,
        )
    for t in soak["targets"]:
        mark = "[green]met[/]" if t["met"] else "[red]MISSED[/]"
        console.print(f"  {mark} {t['name']}: {t['value']}", highlight=False)
