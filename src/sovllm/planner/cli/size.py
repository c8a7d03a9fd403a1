"""`sovllm plan size`: flags (or the recorded traffic) into a `SizingQuestion`, which checks
itself, then the sizing, its report and its page."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from sovllm.planner.catalog import hardware_catalog
from sovllm.planner.cli.common import (
    LENGTHS_FROM_HELP,
    bad,
    bad_value,
    console,
    emit_json,
    engine,
    file_precision,
    hardware,
    model,
    profile_model,
    simulation_failed,
    split,
    workload_lengths,
)
from sovllm.planner.cli.traffic import print_traffic, recorded_traffic
from sovllm.planner.cost import CostParams
from sovllm.planner.errors import ScenarioError
from sovllm.planner.question import SizingQuestion
from sovllm.planner.slo import SLO
from sovllm.planner.workload import LENGTHS_HELP

if TYPE_CHECKING:
    from sovllm.planner.search import SizingResult

# Catalog prices are in USD; these currencies have a default rate.
USD_RATES = {"EUR": 0.92, "USD": 1.0}


def _usd_rate(
    currency: str, usd_rate: float | None, gpu: float | None, cloud: float | None
) -> float:
    if usd_rate is not None:
        return usd_rate
    if currency.upper() in USD_RATES:
        return USD_RATES[currency.upper()]
    if currency and (gpu is None or cloud is None):
        bad(
            "--usd-rate",
            f"catalog prices are in USD: give --usd-rate ({currency} per USD), or both "
            "--gpu-price and --cloud-price",
        )
    return 1.0  # unused: both prices are given (or no currency, which the question refuses)


def size_cmd(
    model_name: Annotated[
        str, typer.Option("--model", help="Catalog model, HF config.json or GGUF file.")
    ],
    users: Annotated[int | None, typer.Option(help="Concurrent users (closed loop).")] = None,
    prompt_tokens: Annotated[
        str | None, typer.Option(help="Prompt tokens: " + LENGTHS_HELP)
    ] = None,
    output_tokens: Annotated[
        str | None, typer.Option(help="Output tokens [200]: " + LENGTHS_HELP)
    ] = None,
    lengths_from: Annotated[str | None, typer.Option(help=LENGTHS_FROM_HELP)] = None,
    think_time: Annotated[
        float | None, typer.Option(help="Mean think time between requests, s [30].")
    ] = None,
    from_usage: Annotated[
        bool,
        typer.Option(
            "--from-usage",
            help="Size for this service's recorded traffic (request.end audit entries): "
            "fitted lengths, the peak hour's users and think time.",
        ),
    ] = False,
    since: Annotated[
        str | None, typer.Option(help="With --from-usage: read requests from this date on.")
    ] = None,
    growth: Annotated[
        str, typer.Option(help="With --from-usage: size for the peak times this, e.g. 3x.")
    ] = "1x",
    replay: Annotated[
        bool,
        typer.Option(
            "--replay",
            help="With --from-usage: simulate the recorded peak hour's requests exactly.",
        ),
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="With --from-usage: YAML settings file (or SOVLLM_CONFIG)."),
    ] = None,
    ttft_p95: Annotated[float, typer.Option(help="SLO: TTFT p95, s.")] = 1.0,
    tpot_p95: Annotated[float, typer.Option(help="SLO: TPOT p95, s.")] = 0.1,
    gpus: Annotated[
        str | None, typer.Option(help="Comma-separated GPU types allowed \\[all in the catalog].")
    ] = None,
    precisions: Annotated[
        str | None,
        typer.Option(help="Comma-separated precisions to try \\[bf16,fp8; a GGUF file's own]."),
    ] = None,
    engine_name: Annotated[str, typer.Option("--engine", help="Serving engine.")] = "vllm",
    max_tp: Annotated[int, typer.Option(help="Largest TP degree (GPUs in one node).")] = 8,
    cached_prompt_fraction: Annotated[
        float,
        typer.Option(help="Share of each prompt found in the prefix cache (chat history), 0-1."),
    ] = 0.0,
    rank_by: Annotated[
        str, typer.Option(help="Rank by 'onprem' or 'cloud' monthly cost.")
    ] = "onprem",
    currency: Annotated[str, typer.Option(help="Currency label of all costs.")] = "EUR",
    usd_rate: Annotated[
        float | None,
        typer.Option(help="Currency units per USD for catalog prices [0.92 for EUR, 1 for USD]."),
    ] = None,
    gpu_price: Annotated[
        float | None, typer.Option(help="Purchase price per GPU \\[catalog].")
    ] = None,
    cloud_price: Annotated[
        float | None, typer.Option(help="Cloud price per GPU-hour \\[catalog].")
    ] = None,
    years: Annotated[float, typer.Option(help="Amortisation period, years.")] = 3.0,
    electricity_price: Annotated[float, typer.Option(help="Price per kWh.")] = 0.25,
    pue: Annotated[float, typer.Option(help="Data-centre PUE.")] = 1.4,
    hosting_per_year: Annotated[float, typer.Option(help="Hosting per server per year.")] = 12000,
    staff_per_year: Annotated[float, typer.Option(help="Staff cost per year.")] = 30000,
    grid_intensity: Annotated[float, typer.Option(help="kg CO2e per kWh.")] = 0.25,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON document.")] = False,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Also write the sizing as one self-contained HTML page (charts, no script).",
        ),
    ] = None,
) -> None:
    """Find the cheapest GPU x precision x TP x replicas that serves the users within the SLO."""
    from sovllm.planner.report import print_size, size_json
    from sovllm.planner.search import size, size_replay
    from sovllm.planner.simulator import SimulationError

    if html is not None:
        _check_writable("--html", html)
    traffic, growth_factor = None, 1.0
    if from_usage:
        from sovllm.planner.traffic import fit_lengths

        replaced = {
            "--users": users,
            "--prompt-tokens": prompt_tokens,
            "--output-tokens": output_tokens,
            "--lengths-from": lengths_from,
            "--think-time": think_time,
        }
        traffic, growth_factor = recorded_traffic(since, growth, config, replaced)
        users = math.ceil(traffic.peak_users * growth_factor)
        think_time = traffic.think_time_s
        prompt = fit_lengths([r.prompt_tokens for r in traffic.requests])
        out = fit_lengths([r.output_tokens for r in traffic.requests])
        prompt_flag = "--from-usage"
    else:
        for flag, given in (
            ("--since", since),
            ("--replay", replay or None),
            ("--growth", None if growth == "1x" else growth),
            ("--config", config),
        ):
            if given is not None:
                bad(flag, "only with --from-usage")
        if users is None:
            bad("--users", "give --users (or --from-usage to size for the recorded traffic)")
        if lengths_from is None and output_tokens is None:
            output_tokens = "200"
        prompt, out, prompt_flag = workload_lengths(
            "--prompt-tokens", prompt_tokens, output_tokens, lengths_from
        )
    m = model(model_name)
    chosen = [p.strip().lower() for p in split(precisions or "bf16,fp8")]
    hws = [hardware(g, "--gpus") for g in split(gpus)] if gpus is not None else None
    currency = currency.strip()
    question = SizingQuestion(
        model=m,
        engine=engine(engine_name),
        gpus=tuple(
            {hw.name: hw for hw in (hardware_catalog().values() if hws is None else hws)}.values()
        ),
        precisions=tuple(dict.fromkeys(chosen)),
        users=users,
        prompt=prompt,
        output=out,
        think_time_s=30.0 if think_time is None else think_time,
        slo=SLO.p95(ttft_p95, tpot_p95),
        cost=CostParams(
            currency=currency,
            usd_rate=_usd_rate(currency, usd_rate, gpu_price, cloud_price),
            gpu_price=gpu_price,
            cloud_price=cloud_price,
            years=years,
            electricity_price=electricity_price,
            pue=pue,
            hosting_per_year=hosting_per_year,
            staff_per_year=staff_per_year,
            grid_kg_per_kwh=grid_intensity,
        ),
        max_tp=max_tp,
        rank_by=rank_by,
        cached_fraction=cached_prompt_fraction,
    )
    try:
        question.check()
    except ScenarioError as exc:
        # With --from-usage the users are the recorded peak times --growth.
        bad_value(exc, prompt_flag, **({"users": "--growth"} if from_usage else {}))
    question = replace(
        question,
        precisions=tuple(file_precision(m, "--precisions", list(question.precisions), precisions)),
    )
    for hw in question.gpus:
        if hw.kind == "cpu":
            profile_model(m, hw)
    try:
        if traffic is not None and replay:
            trace, prompt, out = traffic.replay(growth_factor)
            result = size_replay(replace(question, trace=trace, prompt=prompt, output=out))
        else:
            result = size(question)
    except SimulationError as exc:
        simulation_failed("--users", exc, "size for fewer users")
    precs = list(question.precisions)
    doc = size_json(result, precs)
    if traffic is not None:
        from sovllm.planner.traffic import traffic_json

        doc["traffic"] = traffic_json(traffic, growth_factor, question.users, replay)
    if html is not None:
        _write_html(html, result, doc, question.cost)
    if as_json:
        emit_json(doc)
        return
    terminal = console()
    if traffic is not None:
        print_traffic(traffic, growth_factor, question.users, replay, terminal)
    print_size(result, precs, terminal)
    if html is not None:
        terminal.print(f"Report: {escape(str(html))}")


def _check_writable(flag: str, path: Path) -> None:
    """Refuse a page that cannot be written before the sizing runs, not after."""
    if path.is_dir():
        bad(flag, f"{path} is a folder; give a file name, e.g. {path / 'plan.html'}")
    parent = path.parent
    if not parent.is_dir():
        bad(flag, f"cannot write {path}: the folder {parent} does not exist")


def _write_html(path: Path, result: SizingResult, doc: dict[str, Any], params: CostParams) -> None:
    from sovllm.planner.html import charted, render
    from sovllm.planner.search import latency_sweep, sweep_users
    from sovllm.planner.validation import engine_errors

    counts = sweep_users(result.users)
    sweeps = [latency_sweep(result, c, counts) for c in result.feasible[: len(charted(doc))]]
    page = render(doc, sweeps, engine_errors(result.engine.name), params)
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        bad("--html", f"cannot write {path}: {exc.strerror or exc}")
