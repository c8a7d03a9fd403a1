"""Readable (rich) and stable JSON renderings of predictions and sizing results."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sovllm.planner.cost import CostReport
from sovllm.planner.memory import MemoryPlan, plan_memory
from sovllm.planner.predict import Prediction
from sovllm.planner.search import Candidate, SizingResult
from sovllm.planner.simulator import Stats
from sovllm.planner.specs import Engine

PREDICT_SCHEMA = "sovllm.plan.predict/v1"
SIZE_SCHEMA = "sovllm.plan.size/v1"


def _r(x: float, nd: int = 4) -> float | None:
    return None if math.isnan(x) or math.isinf(x) else round(x, nd)


def _stats(s: Stats, p99: bool = True) -> dict[str, float | None]:
    d = {"mean": _r(s.mean), "p50": _r(s.p50), "p95": _r(s.p95)}
    if p99:
        d["p99"] = _r(s.p99)
    return d


def memory_json(m: MemoryPlan) -> dict[str, Any]:
    return {
        "weights_gb": _r(m.weights_gb, 3),
        "kv_gb": _r(m.kv_gb, 3),
        # The KV the sequences hold at once (at most the free memory; the rest queue).
        "kv_in_use_gb": _r(m.per_gpu_total_gb - m.weights_gb - m.activations_gb - m.overhead_gb, 3),
        "activations_gb": _r(m.activations_gb, 3),
        "overhead_gb": _r(m.overhead_gb, 3),
        "per_gpu_gb": _r(m.per_gpu_total_gb, 3),
        "gpu_memory_gb": _r(m.gpu_memory_gb, 3),
        "usable_gb": _r(m.usable_gb, 3),
        "kv_free_gb": _r(m.kv_free_gb, 3),
        "kv_bytes_per_token": int(m.kv_bytes_per_token),
        "kv_bytes_per_token_per_gpu": int(m.kv_bytes_per_token_per_gpu),
        "kv_token_capacity": m.kv_token_capacity,
        "required_total_gb": _r(m.required_total_gb, 3),
        "gpus_per_replica": m.gpus_per_replica,
    }


def predict_json(p: Prediction) -> dict[str, Any]:
    s = p.scenario
    sim = p.sim
    return {
        "schema": PREDICT_SCHEMA,
        "inputs": {
            "model": s.model.name,
            "gpu": s.hw.name,
            "num_gpus": s.num_gpus,
            "tp": s.tp,
            "pp": s.pp,
            "precision": s.precision,
            "kv_precision": s.kv_precision,
            "engine": s.engine.name,
            "engine_provenance": s.engine.provenance,
            "input_tokens": str(s.prompt),
            "output_tokens": str(s.output),
            "cached_prompt_fraction": s.cached_fraction,
            "load": {
                "kind": s.load.kind,
                "value": s.load.value,
                "think_time_s": s.load.think_time_s,
            },
        },
        "fits": p.memory.fits,
        "fits_all_sequences": p.memory.fits_all_sequences,
        "reason": p.memory.reason,
        "replicas": s.replicas,
        "memory": memory_json(p.memory),
        "max_concurrent_sequences": p.memory.max_concurrent_sequences,
        "output_tokens_per_s": _r(p.output_tokens_per_s, 2),
        "requests_per_s": _r(p.requests_per_s, 4),
        "ttft_s": _stats(sim.ttft) if sim else None,
        "tpot_s": _stats(sim.tpot, p99=False) if sim else None,
        "e2e_s": _stats(sim.e2e) if sim else None,
        "simulation": (
            {
                "requests_completed": sim.completed,
                "requests_measured": sim.measured,
                "mean_batch": _r(sim.mean_batch, 2),
                "peak_running": sim.peak_running,
                "peak_waiting": sim.peak_waiting,
                "simulated_seconds": _r(sim.sim_seconds, 2),
                "notes": sim.notes,
            }
            if sim
            else None
        ),
    }


def cost_json(c: CostReport) -> dict[str, Any]:
    return {
        "currency": c.currency,
        "gpus": c.gpus,
        "servers": c.servers,
        "purchase": _r(c.purchase, 0),
        "onprem_per_month": _r(c.onprem_per_month, 0),
        "onprem_breakdown_per_month": {k: _r(v, 0) for k, v in c.onprem_breakdown.items()},
        "cloud_per_month": _r(c.cloud_per_month, 0),
        "years": c.years,
        "onprem_per_year": _r(c.onprem_per_year, 0),
        "onprem_breakdown_per_year": {k: _r(12 * v, 0) for k, v in c.onprem_breakdown.items()},
        "cloud_per_year": _r(c.cloud_per_year, 0),
        "onprem_per_million_tokens": _r(c.onprem_per_mtok, 3),
        "cloud_per_million_tokens": _r(c.cloud_per_mtok, 3),
    }


def energy_json(c: CostReport) -> dict[str, Any]:
    return {
        "power_kw": _r(c.power_kw, 2),
        "kwh_per_month": _r(c.energy_kwh_per_month, 0),
        "kwh_per_million_tokens": _r(c.kwh_per_mtok, 3),
        "kg_co2e_per_million_tokens": _r(c.kg_co2e_per_mtok, 3),
        "kg_co2e_per_month": _r(c.kg_co2e_per_month, 0),
        "tokens_per_month": _r(c.tokens_per_month, 0),
        "kwh_per_day": _r(c.kwh_per_day, 1),
        "kg_co2e_per_day": _r(c.kg_co2e_per_day, 1),
        "answers_per_day": _r(c.answers_per_day, 0),
        "kwh_per_1000_answers": _r(c.kwh_per_1k_answers, 3),
        "kg_co2e_per_1000_answers": _r(c.kg_co2e_per_1k_answers, 3),
    }


def candidate_json(c: Candidate) -> dict[str, Any]:
    pred = c.prediction
    sim = pred.sim if pred else None
    return {
        "gpu": c.hw.name,
        "precision": c.precision,
        "tp": c.tp,
        "replicas": c.replicas,
        "gpus": c.gpus,
        "users_per_replica": c.users_per_replica,
        "memory": memory_json(c.memory),
        "max_concurrent_sequences": c.memory.max_concurrent_sequences,
        "ttft_s": _stats(sim.ttft) if sim else None,
        "tpot_s": _stats(sim.tpot, p99=False) if sim else None,
        "output_tokens_per_s": _r(pred.output_tokens_per_s, 2) if pred else None,
        "requests_per_s": _r(pred.requests_per_s, 4) if pred else None,
        "limit": c.reason,
        "cost": cost_json(c.cost) if c.cost else None,
        "energy": energy_json(c.cost) if c.cost else None,
    }


def model_memory(r: SizingResult, precision: str) -> MemoryPlan:
    """One copy of the model on one notional GPU big enough to hold it: the article's sum.

    The H100 stands in only for vLLM's scheduler defaults on a large GPU (activation peak)."""
    from dataclasses import replace

    from sovllm.planner.catalog import get_hardware

    hw = replace(get_hardware("h100-sxm"), memory_gb=1e6)
    return plan_memory(r.model, hw, r.engine, precision, 1, 1, r.users, r.prompt.hi + r.output.hi)


def size_json(r: SizingResult, precisions: list[str]) -> dict[str, Any]:
    mm = {}
    for p in precisions:
        m = model_memory(r, p)
        mm[p] = {
            "weights_gb": _r(m.weights_gb, 2),
            "kv_gb": _r(m.kv_gb, 2),
            "activations_gb": _r(m.activations_gb, 2),
            "overhead_gb": _r(m.overhead_gb, 2),
            "total_gb": _r(m.weights_gb + m.kv_gb + m.activations_gb + m.overhead_gb, 2),
            "kv_bytes_per_token": int(m.kv_bytes_per_token),
            "sequences": m.sequences,
            "context_tokens": m.context_tokens,
        }
    return {
        "schema": SIZE_SCHEMA,
        "inputs": {
            "model": r.model.name,
            "users": r.users,
            "prompt_tokens": str(r.prompt),
            "output_tokens": str(r.output),
            "cached_prompt_fraction": r.cached_fraction,
            "think_time_s": r.think_time_s,
            "ttft_p95_s": r.slo.ttft_p95_s,
            "tpot_p95_s": r.slo.tpot_p95_s,
            "engine": r.engine.name,
            "engine_provenance": r.engine.provenance,
            "precisions": precisions,
        },
        "model_memory": mm,
        "recommendation": candidate_json(r.best) if r.best else None,
        "alternatives": [candidate_json(c) for c in r.feasible[1:10]],
        "rejected": [
            {"gpu": c.hw.name, "precision": c.precision, "tp": c.tp, "reason": c.reason}
            for c in r.rejected
        ],
    }


def _ms(x: float) -> str:
    return f"{x * 1000:.0f} ms"


def _provenance(engine: Engine) -> str:
    """A versioned engine profile names the release its factors come from."""
    return f" ({escape(engine.provenance)})" if engine.provenance else ""


def print_predict(p: Prediction, console: Console) -> None:
    s = p.scenario
    m = p.memory
    console.print(
        f"[bold]{escape(s.model.name)}[/] on {s.num_gpus} x {s.hw.name}, TP={s.tp}, PP={s.pp}, "
        f"{s.precision}, {s.engine.name}{_provenance(s.engine)}; {s.replicas} replica(s); load: {s.load.describe()}; "
        f"input {s.prompt} / output {s.output} tokens"
        + (
            f", {s.cached_fraction:.0%} of each prompt in the prefix cache"
            if s.cached_fraction
            else ""
        )
    )
    t = Table(title="Memory per GPU (GB)")
    for col in ("weights", "KV needed", "activations", "overhead", "usable", "KV free"):
        t.add_column(col, justify="right")
    t.add_row(
        *(
            f"{v:.2f}"
            for v in (
                m.weights_gb,
                m.kv_gb,
                m.activations_gb,
                m.overhead_gb,
                m.usable_gb,
                m.kv_free_gb,
            )
        )
    )
    console.print(t)
    console.print(
        f"KV per token: {m.kv_bytes_per_token / 1024:.0f} KiB (model), "
        f"{m.kv_bytes_per_token_per_gpu / 1024:.0f} KiB per GPU; "
        f"max concurrent sequences at {m.context_tokens} tokens: {m.max_concurrent_sequences}"
    )
    if not m.fits:
        console.print(f"[bold red]Does not fit:[/] {escape(m.reason)}")
        return
    if m.reason:
        console.print(f"[yellow]Note:[/] {escape(m.reason)}")
    sim = p.sim
    assert sim is not None
    r = Table(title="Predicted performance")
    for col in ("metric", "mean", "p50", "p95", "p99"):
        r.add_column(col, justify="right")
    r.add_row("TTFT", _ms(sim.ttft.mean), _ms(sim.ttft.p50), _ms(sim.ttft.p95), _ms(sim.ttft.p99))
    r.add_row("TPOT", _ms(sim.tpot.mean), _ms(sim.tpot.p50), _ms(sim.tpot.p95), "")
    r.add_row("E2E", f"{sim.e2e.mean:.2f} s", f"{sim.e2e.p50:.2f} s", f"{sim.e2e.p95:.2f} s", "")
    console.print(r)
    console.print(
        f"Throughput: [bold]{p.output_tokens_per_s:.1f} output tokens/s[/], "
        f"{p.requests_per_s:.3f} requests/s (mean batch {sim.mean_batch:.1f}, "
        f"peak waiting {sim.peak_waiting})"
    )
    for note in sim.notes:
        console.print(f"[yellow]Note:[/] {escape(note)}")


def _cand_row(c: Candidate) -> list[str]:
    pred = c.prediction
    sim = pred.sim if pred else None
    cost = c.cost
    return [
        c.hw.name,
        c.precision,
        str(c.tp),
        str(c.replicas),
        str(c.gpus),
        str(c.users_per_replica),
        f"{sim.ttft.p95:.2f} s" if sim else "-",
        _ms(sim.tpot.p95) if sim else "-",
        f"{pred.output_tokens_per_s:.0f}" if pred else "-",
        f"{cost.onprem_per_month:,.0f}" if cost else "-",
        f"{cost.cloud_per_month:,.0f}" if cost else "-",
    ]


def print_size(r: SizingResult, precisions: list[str], console: Console) -> None:
    console.print(
        f"[bold]{escape(r.model.name)}[/] for {r.users} users, prompts {r.prompt} tokens, "
        f"outputs {r.output} tokens, think {r.think_time_s:g} s; SLO TTFT p95 <= "
        f"{r.slo.ttft_p95_s:g} s, TPOT p95 <= {r.slo.tpot_p95_s * 1000:g} ms; engine {r.engine.name}"
        + _provenance(r.engine)
        + (f"; {r.cached_fraction:.0%} of each prompt cached" if r.cached_fraction else "")
    )
    t = Table(title=f"Memory of one model copy with all {r.users} users resident (GB)")
    for col in ("precision", "weights", "KV cache", "activations", "overhead", "total"):
        t.add_column(col, justify="right")
    for p in precisions:
        m = model_memory(r, p)
        total = m.weights_gb + m.kv_gb + m.activations_gb + m.overhead_gb
        t.add_row(
            p,
            f"{m.weights_gb:.1f}",
            f"{m.kv_gb:.1f}",
            f"{m.activations_gb:.1f}",
            f"{m.overhead_gb:.1f}",
            f"{total:.1f}",
        )
    console.print(t)
    best = r.best
    cur = best.cost.currency if best and best.cost else ""
    cols: tuple[str, ...] = ("GPU", "precision", "TP", "replicas", "GPUs", "users/replica")
    cols += ("TTFT p95", "TPOT p95", "tok/s", f"on-prem {cur}/month", f"cloud {cur}/month")
    if best is None:
        console.print("[bold red]No configuration meets the SLO.[/]")
    else:
        t = Table(title="Chosen configuration")
        for col in cols:
            t.add_column(col, justify="right")
        t.add_row(*_cand_row(best))
        console.print(t)
        if len(r.feasible) > 1:
            t = Table(title="Alternatives (cheapest first)")
            for col in cols:
                t.add_column(col, justify="right")
            for alt in r.feasible[1:8]:
                t.add_row(*_cand_row(alt))
            console.print(t)
        c = best.cost
        assert c is not None
        t = Table(title=f"Cost of the chosen configuration ({c.currency})")
        t.add_column("item")
        t.add_column("per month", justify="right")
        for k, v in c.onprem_breakdown.items():
            t.add_row(f"on-premise {k}", f"{v:,.0f}")
        t.add_row("[bold]on-premise total[/]", f"[bold]{c.onprem_per_month:,.0f}[/]")
        t.add_row("cloud", f"{c.cloud_per_month:,.0f}")
        t.add_row("on-premise per million output tokens", f"{c.onprem_per_mtok:,.2f}")
        t.add_row("cloud per million output tokens", f"{c.cloud_per_mtok:,.2f}")
        console.print(t)
        console.print(f"Purchase (GPUs + servers): {c.purchase:,.0f} {c.currency}")
        t = Table(title="Energy")
        t.add_column("item")
        t.add_column("value", justify="right")
        t.add_row("power at the wall (kW)", f"{c.power_kw:.1f}")
        t.add_row("kWh per month", f"{c.energy_kwh_per_month:,.0f}")
        t.add_row("kWh per million output tokens", f"{c.kwh_per_mtok:.2f}")
        t.add_row("kg CO2e per million output tokens", f"{c.kg_co2e_per_mtok:.2f}")
        t.add_row("kg CO2e per month", f"{c.kg_co2e_per_month:,.0f}")
        console.print(t)
    if r.rejected:
        t = Table(title="Rejected")
        for col in ("GPU", "precision", "TP", "reason"):
            t.add_column(col)
        for rej in r.rejected[:12]:
            t.add_row(rej.hw.name, rej.precision, str(rej.tp), escape(rej.reason))
        if len(r.rejected) > 12:
            t.add_row("...", "", "", f"{len(r.rejected) - 12} more (see --json)")
        console.print(t)
