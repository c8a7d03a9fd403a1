"""`sovllm plan predict`: flags into a `Scenario`, which checks itself, then the prediction."""

from __future__ import annotations

import math
from typing import Annotated

import typer

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
    workload_lengths,
)
from sovllm.planner.errors import ScenarioError
from sovllm.planner.workload import LENGTHS_HELP, Load, ThinkTime


def _load(
    offline: bool, concurrency: int | None, rate: float | None, users: int | None, think: float
) -> Load:
    """The one load the flags give; its values are checked with the scenario. The think time
    goes with every load so that the scenario checks it; only users think."""
    given = {
        "--offline": offline,
        "--concurrency": concurrency is not None,
        "--rate": rate is not None,
        "--users": users is not None,
    }
    if sum(given.values()) != 1:
        bad("--offline/--concurrency/--rate/--users", "give exactly one load")
    if think and users is None and math.isfinite(think) and think > 0:
        bad("--think-time", "applies only to closed-loop --users")
    pause = ThinkTime.exponential(think)
    if concurrency is not None:
        return Load("concurrency", concurrency, pause)
    if rate is not None:
        return Load("rate", rate, pause)
    if users is not None:
        return Load("users", users, pause)
    return Load("offline", think=pause)


def predict(
    model_name: Annotated[
        str, typer.Option("--model", help="Catalog model, HF config.json or GGUF file.")
    ],
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
        typer.Option(help="bf16, fp16, fp8, int8 or int4 \\[bf16; a GGUF file's own]."),
    ] = None,
    kv_precision: Annotated[
        str, typer.Option(help="KV cache dtype: auto, bf16, fp16 or fp8.")
    ] = "auto",
    engine_name: Annotated[
        str,
        typer.Option(
            "--engine",
            help="vllm, sglang, trtllm, nim, llamacpp, or a versioned profile "
            "(vllm-2023, lmdeploy-0.1).",
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
    from sovllm.planner.simulator import SimulationError

    load = _load(offline, concurrency, rate, users, think_time)
    prompt, out, prompt_flag = workload_lengths(
        "--input-tokens", input_tokens, output_tokens, lengths_from
    )
    m = model(model_name)
    prec = file_precision(m, "--precision", [precision or "bf16"], precision)[0]
    hw = hardware(gpu, "--gpu")
    scenario = Scenario(
        model=m,
        hw=hw,
        engine=engine(engine_name),
        precision=prec,
        tp=tp,
        pp=pp,
        num_gpus=num_gpus if num_gpus is not None else tp * pp,
        prompt=prompt,
        output=out,
        load=load,
        kv_precision=kv_precision.strip().lower(),
        requests=requests,
        seed=seed,
        max_num_seqs=max_num_seqs,
        cached_fraction=cached_prompt_fraction,
    )
    try:
        scenario.check()
    except ScenarioError as exc:
        bad_value(exc, prompt_flag, **{"load.value": f"--{load.kind}", "precision": "--precision"})
    if hw.kind == "cpu":
        profile_model(m, hw)
    try:
        result = run_predict(scenario)
    except SimulationError as exc:
        simulation_failed("--requests", exc, "simulate fewer requests")
    if as_json:
        emit_json(predict_json(result))
    else:
        print_predict(result, console())
