"""`sovllm bench`: flags to options, the run, the report."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

from sovllm.bench.config import (
    BadSpec,
    RunBounds,
    Workload,
    parse_lengths,
    parse_slo,
    parse_think,
)
from sovllm.planner.workload import LENGTHS_HELP, Load

# The HTTP client, the runner and the report are imported when the command runs, so that
# every other `sovllm` command starts without loading them.
if TYPE_CHECKING:
    from sovllm.bench.session import Session


def _bad(flag: str, message: str) -> NoReturn:
    raise typer.BadParameter(message, param_hint=f"'{flag}'")


def _check_out(out: Path) -> None:
    """Before the load: a typo in --out must not lose a run that took an hour."""
    from sovllm.bench.report import output_paths

    paths = output_paths(out)
    folder = paths["json"].parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _bad("--out", f"cannot make the folder {folder}: {exc.strerror or exc}")
    if not os.access(folder, os.W_OK):
        _bad("--out", f"cannot write into {folder}")
    for path in paths.values():
        if path.is_dir():
            _bad("--out", f"{path} is a folder")


def _positive(flag: str, value: float | None, allow_zero: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        _bad(flag, f"must be {'0 or more' if allow_zero else 'above 0'}, got {value:g}")


def _levels(text: str | None) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        _bad("--levels", f"expected comma-separated numbers, got '{text}'")
    if not all(math.isfinite(v) and v > 0 for v in values):
        _bad("--levels", "every level must be above 0")
    return tuple(sorted(values))


def build_load(
    users: int | None,
    think_time: str,
    turns: int,
    rate: float | None,
    burstiness: float,
    max_concurrency: int | None,
    concurrency: int | None,
    replay: Path | None,
    replay_speed: float,
) -> Load:
    given = [
        flag
        for flag, value in (
            ("--users", users),
            ("--rate", rate),
            ("--concurrency", concurrency),
            ("--replay", replay),
        )
        if value is not None
    ]
    if len(given) > 1:
        _bad("/".join(given), "give one load: --users, --rate, --concurrency or --replay")
    if users is not None and users < 1:
        _bad("--users", f"must be at least 1, got {users}")
    if concurrency is not None and concurrency < 1:
        _bad("--concurrency", f"must be at least 1, got {concurrency}")
    if max_concurrency is not None and max_concurrency < 1:
        _bad("--max-concurrency", f"must be at least 1, got {max_concurrency}")
    if turns < 1:
        _bad("--turns", f"must be at least 1, got {turns}")
    _positive("--rate", rate)
    _positive("--burstiness", burstiness)
    _positive("--replay-speed", replay_speed)
    try:
        think = parse_think("--think-time", think_time)
    except BadSpec as exc:
        _bad(exc.flag, str(exc))
    if rate is not None:
        return Load("rate", rate, burstiness=burstiness, max_concurrency=max_concurrency)
    if concurrency is not None:
        return Load("concurrency", float(concurrency))
    if replay is not None:
        return Load("replay", replay_speed, replay_path=str(replay))
    return Load("users", float(users if users is not None else 10), think=think, turns=turns)


def bench(
    url: Annotated[
        str, typer.Option(help="OpenAI-compatible base URL, ending in /v1.")
    ] = "http://127.0.0.1:8000/v1",
    api_key: Annotated[
        str | None,
        typer.Option(envvar="SOVLLM_API_KEY", help="Sent as 'Authorization: Bearer KEY'."),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model id (default: the first the server lists).")
    ] = None,
    users: Annotated[
        int | None, typer.Option(help="Closed-loop chat users (the default load: 10).")
    ] = None,
    think_time: Annotated[
        str, typer.Option(help="A user's think time, s: S (exponential, mean S) or MIN-MAX.")
    ] = "5",
    turns: Annotated[
        int, typer.Option(help="Turns of a user's conversation before it starts over.")
    ] = 3,
    rate: Annotated[
        float | None, typer.Option(help="Open loop: arrivals per second (Poisson or gamma).")
    ] = None,
    burstiness: Annotated[
        float, typer.Option(help="Gamma shape of the gaps between arrivals; 1 is Poisson.")
    ] = 1.0,
    max_concurrency: Annotated[
        int | None, typer.Option(help="Open loop: at most this many requests in flight.")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Fixed concurrency: N requests always in flight.")
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option(
            help="Replay a JSONL trace: timestamp, prompt_tokens|messages, output_tokens."
        ),
    ] = None,
    replay_speed: Annotated[
        float, typer.Option(help="Replay time scale (2 = twice as fast).")
    ] = 1.0,
    prompt_tokens: Annotated[
        str, typer.Option(help="Prompt tokens of each user message: " + LENGTHS_HELP)
    ] = "300-500",
    output_tokens: Annotated[str, typer.Option(help="Output tokens: " + LENGTHS_HELP)] = "100",
    ignore_eos: Annotated[
        bool,
        typer.Option(help="Force the output length (vLLM's ignore_eos and min_tokens)."),
    ] = True,
    duration: Annotated[float, typer.Option(help="Measured seconds of each run.")] = 60.0,
    requests: Annotated[
        int, typer.Option(help="At most this many measured requests per run.")
    ] = 100_000,
    warmup: Annotated[
        float | None,
        typer.Option(
            help="Seconds of load before measuring (default: 10% of --duration, at most 30)."
        ),
    ] = None,
    grace: Annotated[
        float, typer.Option(help="Seconds for requests in flight to finish after a run.")
    ] = 30.0,
    timeout: Annotated[float, typer.Option(help="Seconds one request may take.")] = 300.0,
    slo: Annotated[
        str | None,
        typer.Option(help="SLO terms, e.g. ttft_p95=1.0,tpot_p95=0.1 (seconds; bare = p99)."),
    ] = None,
    sweep: Annotated[
        bool,
        typer.Option(
            "--sweep", help="Raise the load level by level until the SLO breaks or it saturates."
        ),
    ] = False,
    levels: Annotated[
        str | None,
        typer.Option(help="Sweep levels, e.g. 1,2,4,8 (default: doubling up to the load)."),
    ] = None,
    capacity: Annotated[
        bool,
        typer.Option("--capacity", help="Binary-search the largest load that meets --slo."),
    ] = False,
    capacity_max: Annotated[
        float, typer.Option(help="Upper bound of the capacity search (users or req/s).")
    ] = 1024.0,
    compare_plan: Annotated[
        bool,
        typer.Option("--compare-plan", help="Set `sovllm plan predict` beside the measurement."),
    ] = False,
    hardware: Annotated[
        str, typer.Option(help="Planner hardware profile for --compare-plan.")
    ] = "cpu-local",
    plan_model: Annotated[
        str | None,
        typer.Option(help="Planner model for --compare-plan (default: the served model id)."),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Random seed (default: new each run, so no prefix cache is reused)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write OUT.json, OUT.jsonl (per request) and OUT.html."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the JSON result instead of tables.")
    ] = False,
    soak: Annotated[
        bool,
        typer.Option("--soak", help="A long run with an admin actor beside it (docs/bench.md)."),
    ] = False,
    admin_key: Annotated[
        str | None,
        typer.Option(envvar="SOVLLM_ADMIN_KEY", help="--soak: an admin key (default --api-key)."),
    ] = None,
    sample_every: Annotated[float, typer.Option(help="--soak: s between samples.")] = 10.0,
    admin_every: Annotated[float, typer.Option(help="--soak: s between admin reads.")] = 5.0,
    key_every: Annotated[float, typer.Option(help="--soak: s between key cycles.")] = 30.0,
    stop_every: Annotated[float, typer.Option(help="--soak: s between stops.")] = 120.0,
    stop_hold: Annotated[float, typer.Option(help="--soak: s each stop lasts.")] = 5.0,
    server_pid: Annotated[
        int | None, typer.Option(help="--soak: read RSS and open files from /proc/PID.")
    ] = None,
) -> None:
    """Load-test an OpenAI-compatible endpoint with simulated chat users."""
    import random

    from sovllm.bench.report import TerminalUI
    from sovllm.bench.session import Options, new_session, run_loop

    load = build_load(
        users,
        think_time,
        turns,
        rate,
        burstiness,
        max_concurrency,
        concurrency,
        replay,
        replay_speed,
    )
    try:
        prompt = parse_lengths("--prompt-tokens", prompt_tokens)
        output = parse_lengths("--output-tokens", output_tokens)
        slo_spec = parse_slo("--slo", slo)
        if load.kind == "replay":
            from sovllm.bench.workload import load_trace

            load_trace(Path(load.replay_path or ""))
    except BadSpec as exc:
        _bad(exc.flag, str(exc))
    _positive("--duration", duration)
    _positive("--warmup", warmup, allow_zero=True)
    _positive("--grace", grace, allow_zero=True)
    _positive("--timeout", timeout)
    _positive("--capacity-max", capacity_max)
    if requests < 1:
        _bad("--requests", f"must be at least 1, got {requests}")
    if sweep and capacity:
        _bad("--sweep/--capacity", "choose one")
    if capacity and not slo_spec:
        _bad("--slo", "--capacity needs an SLO to search against, e.g. ttft_p95=1.0")
    if (sweep or capacity) and load.kind == "replay":
        _bad("--replay", "a trace has its own load; it cannot be swept or searched")
    sweep_levels = _levels(levels)
    if levels and not sweep:
        _bad("--levels", "only applies with --sweep")

    if out is not None:
        _check_out(out)
    err = Console(stderr=True)
    soak_plan = None
    if soak:
        from sovllm.bench import soak_cli

        periods = {"sample_every": sample_every, "admin_every": admin_every}
        periods |= {"key_every": key_every, "stop_every": stop_every, "stop_hold": stop_hold}
        problem = soak_cli.check_flags(load, sweep, capacity, **periods)
        if problem is not None:
            _bad("--soak", problem)
        if not (admin_key or api_key):
            _bad("--admin-key", "--soak needs an admin key (or an admin --api-key)")
        try:
            soak_plan, api_key = soak_cli.prepare(
                url, admin_key or api_key or "", periods, server_pid
            )
        except soak_cli.SoakSetupError as exc:
            err.print(f"sovllm bench: {exc}", highlight=False)
            raise typer.Exit(1) from None
    options = Options(
        url=url,
        api_key=api_key,
        model=model,
        load=load,
        workload=Workload(
            prompt=prompt,
            output=output,
            ignore_eos=ignore_eos,
            seed=seed if seed is not None else random.SystemRandom().randrange(2**31),
        ),
        bounds=RunBounds(
            duration_s=duration,
            max_requests=requests,
            warmup_s=warmup if warmup is not None else min(0.1 * duration, 30.0),
            grace_s=grace,
            request_timeout_s=timeout,
        ),
        slo=slo_spec,
        mode="capacity" if capacity else ("sweep" if sweep else "single"),
        levels=sweep_levels,
        capacity_ceiling=capacity_max,
        soak=soak_plan,
    )
    from sovllm.bench.client import TargetError

    session = new_session(options)
    ui = TerminalUI(err, quiet=False)
    try:
        run_loop(options, ui, session)
    except TargetError as exc:
        err.print(f"sovllm bench: {exc}", highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        session.interrupted = True
    _report(session, err, out, as_json, compare_plan, hardware, plan_model)
    if session.interrupted:
        raise typer.Exit(130)
    if soak:
        from sovllm.bench.soak_cli import verdict

        if not verdict(err, session.soak):
            raise typer.Exit(1)


def _report(
    session: Session,
    err: Console,
    out: Path | None,
    as_json: bool,
    compare_plan: bool,
    hardware: str,
    plan_model: str | None,
) -> None:
    from sovllm.bench.report import document, print_summary, write_files

    if compare_plan and session.main is not None:
        from sovllm.bench.compare import compare

        session.compare_plan = compare(session, hardware, plan_model)
    unwritten = None
    if out is not None:
        try:
            doc, paths = write_files(session, out)
            err.print(
                f"wrote {paths['json']}, {paths['requests']} and {paths['html']}", highlight=False
            )
        except OSError as exc:  # checked before the run, changed since: still show the run
            unwritten = f"sovllm bench: could not write {out}: {exc.strerror or exc}"
            doc = document(session)
    else:
        doc = document(session)
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        console = Console(width=None if sys.stdout.isatty() else 160)
        print_summary(console, doc)
        if doc.get("compare_plan"):
            from sovllm.bench.compare import print_compare

            print_compare(console, doc["compare_plan"])
    if unwritten is not None:
        err.print(unwritten, highlight=False)
        raise typer.Exit(1)
