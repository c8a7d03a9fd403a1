"""`sovllm plan ...` commands: size, predict, calibrate, validate."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from sovllm.planner.catalog import (
    PRECISIONS,
    Engine,
    Hardware,
    Model,
    get_engine,
    get_hardware,
    get_model,
    hardware_catalog,
)
from sovllm.planner.errors import PlannerError
from sovllm.planner.workload import Lengths, Load, read_lengths_file

if TYPE_CHECKING:
    from sovllm.planner.cost import CostParams
    from sovllm.planner.search import SizingResult
    from sovllm.planner.traffic import Traffic

plan_app = typer.Typer(
    help="Size hardware, parallelism, replicas, cost and energy for N users.",
    no_args_is_help=True,
)


def _console() -> Console:
    # Wide enough that the tables stay readable when piped into a file or a test runner.
    return Console(width=None if sys.stdout.isatty() else 150)


def _bad(flag: str, message: str) -> NoReturn:
    raise typer.BadParameter(message, param_hint=f"'{flag}'")


def _lengths(flag: str, text: str) -> Lengths:
    try:
        return Lengths.parse(text)
    except ValueError as exc:
        _bad(flag, str(exc))


LENGTHS_HELP = "N, MIN-MAX (uniform) or lognormal:MEDIAN,P95."
LENGTHS_FROM_HELP = (
    'JSONL file, one {"input_tokens": N, "output_tokens": M} a line, taken in file order '
    "(replaces the token flags)."
)


def _workload_lengths(
    prompt_flag: str, prompt_text: str | None, output_text: str | None, lengths_from: str | None
) -> tuple[Lengths, Lengths, str]:
    """Prompt and output lengths from the token flags or a lengths file, and the flag that
    set the prompt lengths (for errors about them)."""
    if lengths_from is not None:
        if prompt_text is not None or output_text is not None:
            _bad(
                "--lengths-from",
                f"give either --lengths-from or {prompt_flag} and --output-tokens, not both",
            )
        try:
            prompt, out = read_lengths_file(Path(lengths_from))
        except ValueError as exc:
            _bad("--lengths-from", str(exc))
        return prompt, out, "--lengths-from"
    if prompt_text is None:
        _bad(prompt_flag, f"give {prompt_flag} (or --lengths-from FILE.jsonl)")
    if output_text is None:
        _bad("--output-tokens", "give --output-tokens (or --lengths-from FILE.jsonl)")
    return _lengths(prompt_flag, prompt_text), _lengths("--output-tokens", output_text), prompt_flag


def _model(name: str) -> Model:
    try:
        return get_model(name)
    except PlannerError as exc:
        _bad("--model", str(exc))


def _file_precision(m: Model, flag: str, chosen: list[str], given: str | None) -> list[str]:
    """A GGUF's weights have one precision: it replaces the default, and contradicts a flag."""
    if m.file_precision is None:
        return [_precision(flag, p) for p in chosen]
    if given is not None and any(_precision(flag, p) != m.file_precision for p in chosen):
        _bad(flag, f"{m.name} is stored in {m.file_precision}; its precision cannot be changed")
    return [m.file_precision]


def _cached_fraction(value: float) -> float:
    if not 0 <= value < 1:
        _bad("--cached-prompt-fraction", f"must be at least 0 and below 1, got {value}")
    return value


def _check_context(m: Model, prompt: Lengths, out: Lengths, prompt_flag: str) -> None:
    need = prompt.hi + out.hi
    if m.max_context is not None and need > m.max_context:
        what = (
            "its lengths" if prompt_flag == "--lengths-from" else f"{prompt_flag} + --output-tokens"
        )
        # A lognormal is planned up to its 99.9th percentile: say so, or the number surprises.
        tail = (
            " (a lognormal's 99.9th percentile)" if "lognormal" in (prompt.kind, out.kind) else ""
        )
        _bad(
            prompt_flag,
            f"{what} reach {need} tokens{tail}, beyond {m.name}'s context of {m.max_context} "
            "tokens",
        )


def _hardware(name: str, flag: str) -> Hardware:
    try:
        return get_hardware(name)
    except PlannerError as exc:
        _bad(flag, str(exc))


def _engine(name: str) -> Engine:
    try:
        return get_engine(name)
    except PlannerError as exc:
        _bad("--engine", str(exc))


def _precision(flag: str, name: str) -> str:
    p = name.strip().lower()
    if p not in PRECISIONS:
        _bad(flag, f"unknown precision '{name}'; choose from {', '.join(PRECISIONS)}")
    return p


def _finite(flag: str, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        _bad(flag, f"must be a finite number, got {value}")


def _split(text: str) -> list[str]:
    """Comma-separated names, each once, in the order given."""
    return list(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))


def _profile_model(m: Model, hw: Hardware) -> None:
    """The cpu-local profile holds the rates of the model it was measured with; they say
    nothing about another model."""
    from sovllm.planner.profile import profile_path

    try:
        doc = json.loads(profile_path().read_text(encoding="utf-8"))
        measured = get_model(str(doc["model"]))
    except (OSError, ValueError, KeyError, TypeError, PlannerError):
        return  # unknown or moved model: nothing to compare with
    shape = ("layers", "hidden", "heads", "kv_heads", "head_dim", "ffn", "vocab")
    if any(getattr(m, k) != getattr(measured, k) for k in shape):
        _bad(
            "--model",
            f"the {hw.name} profile was measured with {doc['model']}; its rates do not apply to "
            f"{m.name} (run `sovllm plan calibrate --model ...` for that model)",
        )


def _simulation_failed(flag: str, exc: Exception, hint: str) -> NoReturn:
    _bad(flag, f"{exc}; {hint}")


def _emit_json(doc: dict[str, Any]) -> None:
    typer.echo(json.dumps(doc, indent=2, sort_keys=False))


@plan_app.command()
def predict(
    model: Annotated[str, typer.Option(help="Catalog model, HF config.json or GGUF file.")],
    gpu: Annotated[str, typer.Option(help="Catalog GPU, or cpu-local (see `plan calibrate`).")],
    input_tokens: Annotated[str | None, typer.Option(help="Prompt tokens: " + LENGTHS_HELP)] = None,
    output_tokens: Annotated[
        str | None, typer.Option(help="Output tokens: " + LENGTHS_HELP)
    ] = None,
    lengths_from: Annotated[str | None, typer.Option(help=LENGTHS_FROM_HELP)] = None,
    num_gpus: Annotated[
        int | None, typer.Option(help="GPUs in all; N/(TP*PP) replicas serve in data parallel.")
    ] = None,
    tp: Annotated[int, typer.Option(help="Tensor-parallel degree.")] = 1,
    pp: Annotated[int, typer.Option(help="Pipeline-parallel degree.")] = 1,
    precision: Annotated[
        str | None,
        typer.Option(help="bf16, fp16, fp8, int8 or int4 [bf16; a GGUF file's own]."),
    ] = None,
    kv_precision: Annotated[
        str, typer.Option(help="KV cache dtype: auto, bf16, fp16 or fp8.")
    ] = "auto",
    engine: Annotated[
        str,
        typer.Option(
            help="vllm, sglang, trtllm, nim, llamacpp, or a versioned profile "
            "(vllm-2023, lmdeploy-0.1)."
        ),
    ] = "vllm",
    offline: Annotated[
        bool, typer.Option("--offline", help="All requests queued at once.")
    ] = False,
    concurrency: Annotated[
        int | None, typer.Option(help="Fixed number of requests in flight.")
    ] = None,
    rate: Annotated[float | None, typer.Option(help="Poisson arrivals, requests/s.")] = None,
    users: Annotated[
        int | None, typer.Option(help="Closed-loop users (with --think-time).")
    ] = None,
    think_time: Annotated[float, typer.Option(help="Mean think time of a user, s.")] = 0.0,
    requests: Annotated[int | None, typer.Option(help="Requests to simulate.")] = None,
    max_num_seqs: Annotated[
        int | None, typer.Option(help="Override the engine's max running sequences.")
    ] = None,
    cached_prompt_fraction: Annotated[
        float,
        typer.Option(help="Share of each prompt found in the prefix cache (chat history), 0-1."),
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Random seed of the simulated workload.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON document.")] = False,
) -> None:
    """Predict memory, latency and throughput of one deployment under one load."""
    from sovllm.planner.predict import Scenario
    from sovllm.planner.predict import predict as run_predict
    from sovllm.planner.report import predict_json, print_predict
    from sovllm.planner.search import tp_problem

    loads = [
        x
        for x, on in (
            ("--offline", offline),
            ("--concurrency", concurrency is not None),
            ("--rate", rate is not None),
            ("--users", users is not None),
        )
        if on
    ]
    if len(loads) != 1:
        _bad("--offline/--concurrency/--rate/--users", "give exactly one load")
    _finite("--rate", rate)
    _finite("--think-time", think_time)
    if concurrency is not None and concurrency < 1:
        _bad("--concurrency", f"must be at least 1, got {concurrency}")
    if users is not None and users < 1:
        _bad("--users", f"must be at least 1, got {users}")
    if rate is not None and not rate > 0:
        _bad("--rate", f"must be above 0, got {rate}")
    if think_time < 0:
        _bad("--think-time", f"must be 0 or more, got {think_time}")
    if think_time and users is None:
        _bad("--think-time", "applies only to closed-loop --users")
    if requests is not None and requests < 1:
        _bad("--requests", f"must be at least 1, got {requests}")
    if max_num_seqs is not None and max_num_seqs < 1:
        _bad("--max-num-seqs", f"must be at least 1, got {max_num_seqs}")
    if tp < 1:
        _bad("--tp", f"must be at least 1, got {tp}")
    if pp < 1:
        _bad("--pp", f"must be at least 1, got {pp}")
    n = num_gpus if num_gpus is not None else tp * pp
    if n < 1:
        _bad("--num-gpus", f"must be at least 1, got {n}")
    if n % (tp * pp):
        _bad("--tp", f"TP x PP = {tp * pp} does not divide --num-gpus {n}")
    prompt, out, prompt_flag = _workload_lengths(
        "--input-tokens", input_tokens, output_tokens, lengths_from
    )
    kvp = kv_precision.strip().lower()
    if kvp not in ("auto", "bf16", "fp16", "fp8"):
        _bad(
            "--kv-precision", f"unknown KV precision '{kv_precision}'; choose auto, bf16, fp16, fp8"
        )
    m = _model(model)
    _check_context(m, prompt, out, prompt_flag)
    prec = _file_precision(m, "--precision", [precision] if precision else ["bf16"], precision)[0]
    why = tp_problem(m, tp)
    if why:
        _bad("--tp", why)
    if pp > m.layers:
        _bad("--pp", f"PP={pp} exceeds the {m.layers} layers")
    hw = _hardware(gpu, "--gpu")
    if hw.kind == "cpu":
        if tp > 1:
            _bad("--tp", f"{hw.name} is one measured machine: TP must be 1, got {tp}")
        if pp > 1:
            _bad("--pp", f"{hw.name} is one measured machine: PP must be 1, got {pp}")
        _profile_model(m, hw)
    eng = _engine(engine)
    if concurrency is not None:
        load = Load("concurrency", concurrency)
    elif rate is not None:
        load = Load("rate", rate)
    elif users is not None:
        load = Load("users", users, think_time)
    else:
        load = Load("offline")
    scenario = Scenario(
        model=m,
        hw=hw,
        engine=eng,
        precision=prec,
        tp=tp,
        pp=pp,
        num_gpus=n,
        prompt=prompt,
        output=out,
        load=load,
        kv_precision=kvp,
        requests=requests,
        seed=seed,
        max_num_seqs=max_num_seqs,
        cached_fraction=_cached_fraction(cached_prompt_fraction),
    )
    from sovllm.planner.simulator import SimulationError

    try:
        result = run_predict(scenario)
    except SimulationError as exc:
        _simulation_failed("--requests", exc, "simulate fewer requests")
    if as_json:
        _emit_json(predict_json(result))
    else:
        print_predict(result, _console())


def _recorded_traffic(
    since: str | None,
    growth: str,
    config: Path | None,
    users: int | None,
    prompt_tokens: str | None,
    output_tokens: str | None,
    lengths_from: str | None,
    think_time: float | None,
) -> tuple[Traffic, float]:
    """The traffic recorded in this service's database, opened as `sovllm usage` opens it."""
    from sovllm.cli.common import open_db
    from sovllm.planner.traffic import parse_growth, parse_since, read_traffic

    for flag, given in (
        ("--users", users),
        ("--prompt-tokens", prompt_tokens),
        ("--output-tokens", output_tokens),
        ("--lengths-from", lengths_from),
        ("--think-time", think_time),
    ):
        if given is not None:
            _bad(flag, "--from-usage takes it from the recorded traffic; leave it out")
    try:
        factor = parse_growth(growth)
    except ValueError as exc:
        _bad("--growth", str(exc))
    day = None
    if since is not None:
        try:
            day = parse_since(since)
        except ValueError as exc:
            _bad("--since", str(exc))
    db = open_db(config)
    try:
        return read_traffic(db, day), factor
    except PlannerError as exc:
        _bad("--from-usage", str(exc))
    finally:
        db.dispose()


def _print_traffic(t: Traffic, growth: float, users: int, replay: bool, console: Console) -> None:
    from sovllm.planner.traffic import traffic_json

    doc = traffic_json(t, growth, users, replay)
    peak = doc["peak"]
    sized = (
        f"Replayed: the peak hour's {t.peak_requests} requests as recorded, arriving "
        f"{growth:g}x as fast ({doc['sized_for_requests_per_hour']:g} requests/hour)."
        if replay
        else f"Sized for x{growth:g}: {users} users, "
        f"{doc['sized_for_requests_per_hour']:g} requests/hour; prompts {doc['prompt_tokens']}, "
        f"outputs {doc['output_tokens']} tokens."
    )
    console.print(
        f"Recorded traffic {doc['first_arrival']} to {doc['last_arrival']}"
        + (f" (since {doc['since']})" if doc["since"] else "")
        + f": {doc['requests']} requests read, {t.pruned} pruned past retention skipped "
        f"(usage tables: {t.usage_requests} requests). Peak hour from {peak['start']}: "
        f"{t.peak_requests} requests, {t.peak_users} users, think time "
        f"{peak['think_time_s']:g} s. {sized}"
    )


@plan_app.command("size")
def size_cmd(
    model: Annotated[str, typer.Option(help="Catalog model, HF config.json or GGUF file.")],
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
        str | None, typer.Option(help="Comma-separated GPU types allowed [all in the catalog].")
    ] = None,
    precisions: Annotated[
        str | None,
        typer.Option(help="Comma-separated precisions to try [bf16,fp8; a GGUF file's own]."),
    ] = None,
    engine: Annotated[str, typer.Option(help="Serving engine.")] = "vllm",
    max_tp: Annotated[int, typer.Option(help="Largest TP degree (GPUs in one node).")] = 8,
    cached_prompt_fraction: Annotated[
        float,
        typer.Option(help="Share of each prompt found in the prefix cache (chat history), 0-1."),
    ] = 0.0,
    rank_by: Annotated[str, typer.Option(help="Rank by 'onprem' or 'cloud' monthly cost.")] = (
        "onprem"
    ),
    currency: Annotated[str, typer.Option(help="Currency label of all costs.")] = "EUR",
    usd_rate: Annotated[
        float | None,
        typer.Option(help="Currency units per USD for catalog prices [0.92 for EUR, 1 for USD]."),
    ] = None,
    gpu_price: Annotated[
        float | None, typer.Option(help="Purchase price per GPU [catalog].")
    ] = None,
    cloud_price: Annotated[
        float | None, typer.Option(help="Cloud price per GPU-hour [catalog].")
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
    from sovllm.planner.cost import CostParams
    from sovllm.planner.report import print_size, size_json
    from sovllm.planner.search import Slo, size

    if html is not None:
        _check_writable("--html", html)
    traffic = None
    if from_usage:
        traffic, growth_factor = _recorded_traffic(
            since, growth, config, users, prompt_tokens, output_tokens, lengths_from, think_time
        )
        users = math.ceil(traffic.peak_users * growth_factor)
        think_time = traffic.think_time_s
        lengths = [(r.prompt_tokens, r.output_tokens) for r in traffic.requests]
    else:
        for flag, given in (
            ("--since", since),
            ("--replay", replay or None),
            ("--growth", None if growth == "1x" else growth),
            ("--config", config),
        ):
            if given is not None:
                _bad(flag, "only with --from-usage")
    if users is None:
        _bad("--users", "give --users (or --from-usage to size for the recorded traffic)")
    if users < 1:
        _bad("--users", f"must be at least 1, got {users}")
    if think_time is None:
        think_time = 30.0
    for flag, val in (
        ("--think-time", think_time),
        ("--ttft-p95", ttft_p95),
        ("--tpot-p95", tpot_p95),
        ("--years", years),
        ("--pue", pue),
        ("--usd-rate", usd_rate),
        ("--electricity-price", electricity_price),
        ("--hosting-per-year", hosting_per_year),
        ("--staff-per-year", staff_per_year),
        ("--grid-intensity", grid_intensity),
        ("--gpu-price", gpu_price),
        ("--cloud-price", cloud_price),
    ):
        _finite(flag, val)
    if think_time < 0:
        _bad("--think-time", f"must be 0 or more, got {think_time}")
    if not ttft_p95 > 0:
        _bad("--ttft-p95", f"must be above 0, got {ttft_p95}")
    if not tpot_p95 > 0:
        _bad("--tpot-p95", f"must be above 0, got {tpot_p95}")
    if max_tp < 1:
        _bad("--max-tp", f"must be at least 1, got {max_tp}")
    if rank_by not in ("onprem", "cloud"):
        _bad("--rank-by", f"choose onprem or cloud, got '{rank_by}'")
    for flag, value in (("--years", years), ("--usd-rate", usd_rate)):
        if value is not None and not value > 0:
            _bad(flag, f"must be above 0, got {value}")
    if pue < 1:
        _bad("--pue", f"must be at least 1 (facility power / IT power), got {pue}")
    currency = currency.strip()
    if not currency:
        _bad("--currency", "give a currency label, e.g. EUR")
    if usd_rate is None:
        rates = {"EUR": 0.92, "USD": 1.0}
        if currency.upper() in rates:
            usd_rate = rates[currency.upper()]
        elif gpu_price is None or cloud_price is None:
            _bad(
                "--usd-rate",
                f"catalog prices are in USD: give --usd-rate ({currency} per USD), or both "
                "--gpu-price and --cloud-price",
            )
        else:
            usd_rate = 1.0  # unused: both prices are given
    for flag, v in (
        ("--electricity-price", electricity_price),
        ("--hosting-per-year", hosting_per_year),
        ("--staff-per-year", staff_per_year),
        ("--grid-intensity", grid_intensity),
        ("--gpu-price", gpu_price or 0.0),
        ("--cloud-price", cloud_price or 0.0),
    ):
        if v < 0:
            _bad(flag, f"must be 0 or more, got {v}")
    if traffic is not None:
        from sovllm.planner.traffic import fit_lengths

        prompt = fit_lengths([p for p, _ in lengths])
        out = fit_lengths([o for _, o in lengths])
        prompt_flag = "--from-usage"
    else:
        if lengths_from is None and output_tokens is None:
            output_tokens = "200"
        prompt, out, prompt_flag = _workload_lengths(
            "--prompt-tokens", prompt_tokens, output_tokens, lengths_from
        )
    precs = list(
        dict.fromkeys(_precision("--precisions", p) for p in _split(precisions or "bf16,fp8"))
    )
    if not precs:
        _bad("--precisions", "give at least one precision")
    m = _model(model)
    _check_context(m, prompt, out, prompt_flag)
    precs = _file_precision(m, "--precisions", precs, precisions)
    eng = _engine(engine)
    if gpus is not None:
        hws = list({hw.name: hw for hw in (_hardware(g, "--gpus") for g in _split(gpus))}.values())
        if not hws:
            _bad("--gpus", "give at least one GPU type")
    else:
        hws = list(hardware_catalog().values())
    for hw in hws:
        if hw.kind == "cpu":
            _profile_model(m, hw)
    params = CostParams(
        currency=currency,
        usd_rate=usd_rate,
        gpu_price=gpu_price,
        cloud_price=cloud_price,
        years=years,
        electricity_price=electricity_price,
        pue=pue,
        hosting_per_year=hosting_per_year,
        staff_per_year=staff_per_year,
        grid_kg_per_kwh=grid_intensity,
    )
    slo = Slo(ttft_p95, tpot_p95)
    cached = _cached_fraction(cached_prompt_fraction)
    from sovllm.planner.simulator import SimulationError

    try:
        if traffic is not None and replay:
            from sovllm.planner.search import size_replay

            trace, prompt, out = traffic.replay(growth_factor)
            result = size_replay(
                m, eng, hws, precs, trace, users, prompt, out, think_time, slo, params, max_tp,
                rank_by,
            )  # fmt: skip
        else:
            result = size(
                m, eng, hws, precs, users, prompt, out, think_time, slo, params, max_tp, rank_by,
                cached_fraction=cached,
            )  # fmt: skip
    except SimulationError as exc:
        _simulation_failed("--users", exc, "size for fewer users")
    doc = size_json(result, precs)
    if traffic is not None:
        from sovllm.planner.traffic import traffic_json

        doc["traffic"] = traffic_json(traffic, growth_factor, users, replay)
    if html is not None:
        _write_html(html, result, doc, params)
    if as_json:
        _emit_json(doc)
    else:
        console = _console()
        if traffic is not None:
            _print_traffic(traffic, growth_factor, users, replay, console)
        print_size(result, precs, console)
        if html is not None:
            console.print(f"Report: {escape(str(html))}")


def _check_writable(flag: str, path: Path) -> None:
    """Refuse a page that cannot be written before the sizing runs, not after."""
    if path.is_dir():
        _bad(flag, f"{path} is a folder; give a file name, e.g. {path / 'plan.html'}")
    parent = path.parent
    if not parent.is_dir():
        _bad(flag, f"cannot write {path}: the folder {parent} does not exist")


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
        _bad("--html", f"cannot write {path}: {exc.strerror or exc}")


@plan_app.command()
def calibrate(
    model: Annotated[
        str | None, typer.Option(help="Model the embedded engine loads [settings.model].")
    ] = None,
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = (
        "1,2,4,8,16,32"
    ),
    prompt_tokens: Annotated[int, typer.Option(help="Prompt length of each sequence.")] = 256,
    decode_steps: Annotated[int, typer.Option(help="Decode steps measured per batch.")] = 32,
    threads: Annotated[int | None, typer.Option(help="CPU threads [settings].")] = None,
    power_w: Annotated[
        float | None, typer.Option(help="Power of this machine under load, W [10 W/thread].")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the saved profile.")] = False,
) -> None:
    """Measure this machine's llama.cpp engine and save the `cpu-local` hardware profile."""
    from sovllm.config import ConfigError, load_settings
    from sovllm.planner.profile import build_profile, profile_path, save_profile

    try:
        sizes = sorted({int(x) for x in batch_sizes.split(",") if x.strip()})
    except ValueError:
        _bad("--batch-sizes", f"expected comma-separated integers, got '{batch_sizes}'")
    if not sizes or sizes[0] < 1:
        _bad("--batch-sizes", "batch sizes must be at least 1")
    if prompt_tokens < 1:
        _bad("--prompt-tokens", f"must be at least 1, got {prompt_tokens}")
    if decode_steps < 1:
        _bad("--decode-steps", f"must be at least 1, got {decode_steps}")
    if threads is not None and threads < 1:
        _bad("--threads", f"must be at least 1, got {threads}")
    try:
        settings = load_settings()
    except ConfigError as exc:
        typer.echo(f"sovllm: {exc}", err=True)
        raise typer.Exit(2) from None
    name = model or settings.model
    n_threads = threads or settings.engine.threads
    try:
        from sovllm.engines.llamacpp.calibrate import (  # type: ignore[import-not-found,unused-ignore]
            measure_rates,
        )
    except ImportError:
        typer.echo("sovllm: this build has no llama.cpp calibration entry point", err=True)
        raise typer.Exit(1) from None
    try:
        samples = measure_rates(name, sizes, prompt_tokens, decode_steps, n_threads)
        doc = build_profile(samples, name, n_threads, power_w)
    except Exception as exc:  # the engine's own errors: report them, never a traceback
        typer.echo(f"sovllm: calibration failed: {exc}", err=True)
        raise typer.Exit(1) from None
    path = save_profile(doc, profile_path(settings.data_dir))
    if as_json:
        _emit_json(doc)
        return
    console = _console()
    console.print(f"Saved the cpu-local profile to {path}")
    for r in doc["rates"]:
        console.print(
            f"  batch {r['batch']:>3}: prefill {r['prefill_tokens_per_s']:8.1f} tok/s, "
            f"decode {r['decode_tokens_per_s']:8.1f} tok/s"
        )


@plan_app.command()
def validate(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON document.")] = False,
    as_labelled: Annotated[
        bool,
        typer.Option(
            "--as-labelled",
            help="Read every row exactly as the CSV labels it (ignore corrections.yaml).",
        ),
    ] = False,
) -> None:
    """Compare predictions with the published measurements shipped with sovllm."""
    from rich.table import Table

    from sovllm.planner.validation import evaluate, summarise

    errors = evaluate(corrected=not as_labelled)
    summary = summarise(errors)
    if as_json:
        _emit_json(
            {
                "rows": [
                    {
                        "id": e.row.id,
                        "dataset": e.row.dataset,
                        "metric": e.row.metric,
                        "measured": e.row.value,
                        "predicted": round(e.predicted, 5),
                        "error_pct": round(e.error_pct, 2),
                        "fitted": e.fitted,
                        "read_as": e.read_as,
                        "source": e.row.source,
                    }
                    for e in errors
                ],
                "summary": [asdict(s) for s in summary],
            }
        )
        return
    console = _console()
    t = Table(title="Per row")
    for col in ("id", "metric", "measured", "predicted", "error %", "fitted", "read as"):
        t.add_column(col)
    for e in errors:
        t.add_row(
            e.row.id,
            e.row.metric,
            f"{e.row.value:.4g}",
            f"{e.predicted:.4g}",
            f"{e.error_pct:+.1f}",
            "fitted" if e.fitted else "",
            e.read_as,
        )
    console.print(t)
    t = Table(title="Summary (absolute % error)")
    for col in ("data", "metric", "rows", "subset", "median", "max", "worst ratio"):
        t.add_column(col)
    for s in summary:
        t.add_row(
            s.dataset,
            s.group,
            str(s.rows),
            s.subset,
            f"{s.median_abs_pct:.1f}",
            f"{s.max_abs_pct:.1f}",
            f"{s.worst_ratio:.2f}x",
        )
    console.print(t)
