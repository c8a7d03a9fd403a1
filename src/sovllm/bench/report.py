"""What the user sees and keeps: the live display, the final tables, the JSON result and the
per-request JSONL beside it."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from sovllm import __version__
from sovllm.bench import metrics
from sovllm.bench.record import RequestRecord
from sovllm.bench.runner import Run
from sovllm.bench.session import Session

SCHEMA = "sovllm-bench/1"
_STAT_COLUMNS = ("mean", "p50", "p90", "p95", "p99", "p999")


def _clean(value: Any) -> Any:
    """JSON has no Infinity or NaN: a value that is not finite is written as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def document(session: Session, files: dict[str, str] | None = None) -> dict[str, Any]:
    o = session.options
    target = session.target
    main = session.main
    doc: dict[str, Any] = _clean(
        {
            "schema": SCHEMA,
            "tool": {"name": "sovllm bench", "version": __version__},
            "started_at": session.started_at,
            "finished_at": session.finished_at,
            "partial": session.interrupted,
            "target": {
                "url": o.url,
                "model": target.model if target else o.model,
                "context_length": target.context_length if target else None,
                "system_fingerprint": target.fingerprint if target else None,
                "token_counter": ("tokenize" if target.tokenize_url else "usage")
                if target
                else None,
            },
            "config": {
                "mode": o.mode,
                "load": o.load.as_json(),
                "prompt_tokens": {"min": o.workload.prompt.lo, "max": o.workload.prompt.hi},
                "output_tokens": {"min": o.workload.output.lo, "max": o.workload.output.hi},
                "ignore_eos": o.workload.ignore_eos,
                "duration_s": o.bounds.duration_s,
                "max_requests": o.bounds.max_requests,
                "warmup_s": o.bounds.warmup_s,
                "grace_s": o.bounds.grace_s,
                "request_timeout_s": o.bounds.request_timeout_s,
                "seed": o.workload.seed,
                "slo": [
                    {"metric": c.metric, "stat": c.stat, "limit_s": c.limit_s}
                    for c in o.slo.constraints
                ],
            },
            "prompt_calibration": session.calibration.as_json() if session.calibration else None,
            "formulas": metrics.FORMULAS,
            "summary": main.summary if main else None,
            "runs": [
                {"index": i, "label": lv.label, "value": lv.value, "summary": lv.summary}
                for i, lv in enumerate(session.levels)
            ],
            "sweep": session.sweep,
            "capacity": session.capacity,
            "compare_plan": session.compare_plan,
            "soak": session.soak,
            "files": files or {},
        }
    )
    return doc


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def request_row(run: int, r: RequestRecord, t0: float) -> dict[str, Any]:
    def rel(t: float | None) -> float | None:
        return None if t is None else round(t - t0, 6)

    return {
        "run": run,
        "id": r.id,
        "user": r.user,
        "conversation": r.conversation,
        "turn": r.turn,
        "warmup": r.warmup,
        "status": r.status,
        "error_type": r.error_type,
        "error": r.error,
        "http_status": r.http_status,
        "finish_reason": r.finish_reason,
        "response_id": r.response_id,
        "scheduled_s": rel(r.scheduled),
        "sent_s": rel(r.sent),
        "first_token_s": rel(r.first_token),
        "last_token_s": rel(r.last_token),
        "end_s": rel(r.end),
        "ttft_s": _r(metrics.ttft(r)),
        "tpot_s": _r(metrics.tpot(r)),
        "e2e_s": _r(metrics.e2e(r)),
        "queue_delay_s": _r(metrics.queue_delay(r)),
        "itl_s": [round(x, 6) for x in metrics.itls(r)],
        "prompt_tokens": r.prompt_tokens,
        "prompt_tokens_target": r.prompt_tokens_target,
        "cached_tokens": r.cached_tokens,
        "output_tokens": r.output_tokens,
        "output_tokens_target": r.output_tokens_target,
        "token_source": r.token_source,
    }


def samples(session: Session) -> list[tuple[str, dict[str, list[float]]]]:
    """Per-run latency values for the CDF plots (successful measured requests)."""
    out = []
    for lv in session.levels:
        ok = [r for r in metrics.measured(lv.result) if r.status == "ok"]
        values = {
            m: [v for r in ok for v in metrics.metric_values(r, m)]
            for m in ("ttft", "tpot", "e2e", "itl")
        }
        out.append((lv.label, values))
    return out


def output_paths(out: Path) -> dict[str, Path]:
    """`--out results/run1` → results/run1.json, .jsonl and .html."""
    stem = out.with_suffix("") if out.suffix in (".json", ".jsonl", ".html") else out
    return {
        "json": stem.with_name(stem.name + ".json"),
        "requests": stem.with_name(stem.name + ".jsonl"),
        "html": stem.with_name(stem.name + ".html"),
    }


def write_files(session: Session, out: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    from sovllm.bench.html import render

    paths = output_paths(out)
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    with paths["requests"].open("w") as f:
        for i, lv in enumerate(session.levels):
            for r in lv.result.records:
                f.write(json.dumps(request_row(i, r, lv.result.t0), separators=(",", ":")))
                f.write("\n")
    doc = document(session, {k: p.name for k, p in paths.items() if k != "json"})
    paths["json"].write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    paths["html"].write_text(render(doc, samples(session)))
    return doc, paths


# -- the terminal -----------------------------------------------------------------------------


def _ms(x: float | int | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x * 1000:,.1f}"


def _num(x: float | int | None, digits: int = 2) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:,.{digits}f}"


def print_summary(console: Console, doc: dict[str, Any]) -> None:
    s = doc["summary"]
    if s is None:
        console.print("[yellow]no run completed: nothing to report[/]")
        return
    partial = " [yellow](partial: interrupted)[/]" if doc["partial"] else ""
    req = s["requests"]
    console.print(
        f"\n[bold]sovllm bench[/] {doc['target']['url']} · {doc['target']['model']} · "
        f"{_label(doc)}{partial}\n"
        f"{req['measured']} measured requests in {s['window']['duration_s']:.1f} s "
        f"({req['ok']} ok, {req['error']} errors, {req['incomplete']} incomplete; "
        f"{req['warmup']} warmup not counted; stopped by {s['stop_reason']})"
    )
    if req["measured"] == 0:
        console.print(
            "[yellow]no request was measured: every request was warmup or still in flight "
            "when the run ended; lengthen --duration or lighten the load[/]"
        )
    lat = Table(title="Latency (ms)", title_justify="left")
    lat.add_column("metric")
    for col in (*_STAT_COLUMNS, "n"):
        lat.add_column(col.replace("p999", "p99.9"), justify="right")
    lat.add_column("formula", style="dim")
    for name in metrics.LATENCY_METRICS:
        st = s["latency_s"][name]
        lat.add_row(
            name.upper().replace("_", " ") if name != "queue_delay" else "queue delay",
            *(_ms(st[c]) for c in _STAT_COLUMNS),
            str(st["count"]),
            metrics.FORMULAS[name],
        )
    console.print(lat)

    thr = Table(title="Throughput", title_justify="left")
    thr.add_column("metric")
    thr.add_column("value", justify="right")
    thr.add_column("formula", style="dim")
    for key, value in s["throughput"].items():
        thr.add_row(key, _num(value), metrics.FORMULAS[key])
    tok = s["tokens"]
    thr.add_row(
        "prompt tokens (mean, min-max)",
        f"{_num(tok['prompt']['mean'], 1)} ({_num(tok['prompt']['min'], 0)}-"
        f"{_num(tok['prompt']['max'], 0)})",
        f"usage.prompt_tokens; exact for {tok['prompt_target_check']['exact']}"
        f"/{tok['prompt_target_check']['checked']} first turns",
    )
    thr.add_row(
        "output tokens (mean, min-max)",
        f"{_num(tok['output']['mean'], 1)} ({_num(tok['output']['min'], 0)}-"
        f"{_num(tok['output']['max'], 0)})",
        f"usage.completion_tokens; as asked for {tok['output_target_check']['exact']}"
        f"/{tok['output_target_check']['checked']}",
    )
    energy = s.get("energy")
    if energy is not None:  # the server reports energy (sovllm:energy_joules_total)
        thr.add_row(
            "joules per output token",
            _num(energy["joules_per_output_token"], 3),
            f"Δ sovllm:energy_joules_total / output tokens; {', '.join(energy['sources'])}",
        )
    console.print(thr)

    slo = s["slo"]
    if slo["terms"]:
        t = Table(title="SLO", title_justify="left")
        for col in ("term", "limit", "measured", "met"):
            t.add_column(col, justify="right" if col != "term" else "left")
        for term in slo["terms"]:
            t.add_row(
                f"{term['metric']} {term['stat']}",
                f"{_ms(term['limit_s'])} ms",
                f"{_ms(term['value_s'])} ms",
                "[green]yes[/]" if term["met"] else "[red]no[/]",
            )
        console.print(t)
    attain = slo["attainment"]
    console.print(
        f"goodput {_num(slo['goodput_requests_per_s'])} req/s "
        f"({metrics.FORMULAS['goodput_requests_per_s']}); SLO attainment "
        f"{'-' if attain is None else f'{attain:.1%}'}"
        + ("" if slo["terms"] else " (no --slo given: every successful request counts)")
    )
    if s["errors"]:
        errors = Table(title="Errors", title_justify="left")
        errors.add_column("type")
        errors.add_column("count", justify="right")
        for kind, n in sorted(s["errors"].items(), key=lambda kv: -kv[1]):
            errors.add_row(kind, str(n))
        console.print(errors)
    if len(doc["runs"]) > 1:
        print_levels(console, doc)
    if doc["capacity"] and doc["capacity"].get("line"):
        console.print(f"\n[bold]{doc['capacity']['line']}[/]")
    elif doc["sweep"]:
        console.print(f"sweep stopped: {doc['sweep']['stopped']}")


def _label(doc: dict[str, Any]) -> str:
    main = doc["summary"]["load"]
    for run in doc["runs"]:
        if run["summary"]["load"] == main:
            return str(run["label"])
    return str(main)


def print_levels(console: Console, doc: dict[str, Any]) -> None:
    t = Table(title="Load levels", title_justify="left")
    for col in ("load", "TTFT p95 ms", "TPOT p95 ms", "req/s", "out tok/s", "goodput", "SLO"):
        t.add_column(col, justify="right" if col != "load" else "left")
    for run in doc["runs"]:
        s = run["summary"]
        met = s["slo"]["met"]
        t.add_row(
            run["label"],
            _ms(s["latency_s"]["ttft"]["p95"]),
            _ms(s["latency_s"]["tpot"]["p95"]),
            _num(s["throughput"]["requests_per_s"]),
            _num(s["throughput"]["output_tokens_per_s"], 1),
            _num(s["slo"]["goodput_requests_per_s"]),
            "-" if met is None else ("[green]met[/]" if met else "[red]missed[/]"),
        )
    console.print(t)


class TerminalUI:
    """Progress and live numbers on stderr; silent when stderr is not a terminal."""

    def __init__(self, console: Console, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet

    def message(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text)

    @contextmanager
    def live(self, run: Run, label: str) -> Iterator[None]:
        if self.quiet or not self.console.is_terminal:
            yield
            return
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=self.console,
        )
        total = run.bounds.warmup_s + run.bounds.duration_s
        task = progress.add_task(label, total=total)
        line = Text()
        with Live(Group(progress, line), console=self.console, refresh_per_second=4):
            ticker = asyncio.get_running_loop().create_task(self._tick(run, progress, task, line))
            try:
                yield
            finally:
                ticker.cancel()

    async def _tick(self, run: Run, progress: Progress, task: Any, line: Text) -> None:
        while True:
            now = time.perf_counter()
            elapsed = now - run.t0
            if run.stop.is_set():
                desc = f"finishing {run.in_flight} in flight"
                progress.update(task, completed=progress.tasks[0].total, description=desc)
            else:
                phase = "warmup" if now < run.warmup_end else "measuring"
                progress.update(
                    task, completed=elapsed, description=f"{phase} · {run.load.describe()}"
                )
            snap = metrics.live(run.records, now)
            line.plain = (
                f"TTFT p95 {_ms(snap['ttft_p95'])} ms · {snap['output_tokens_per_s']:,.0f} "
                f"output tok/s · {run.in_flight} in flight · ok {snap['ok']:.0f} · errors "
                f"{snap['errors']:.0f}"
            )
            await asyncio.sleep(0.25)
