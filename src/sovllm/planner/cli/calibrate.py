"""`sovllm plan calibrate`: measure this machine's llama.cpp engine into the cpu-local profile."""

from __future__ import annotations

import math
from typing import Annotated

import typer

from sovllm.planner.cli.common import bad, console, emit_json


def calibrate(
    model: Annotated[
        str | None, typer.Option(help="Model the embedded engine loads \\[settings.model].")
    ] = None,
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = (
        "1,2,4,8,16,32"
    ),
    prompt_tokens: Annotated[int, typer.Option(help="Prompt length of each sequence.")] = 256,
    decode_steps: Annotated[int, typer.Option(help="Decode steps measured per batch.")] = 32,
    threads: Annotated[int | None, typer.Option(help="CPU threads \\[settings].")] = None,
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
        bad("--batch-sizes", f"expected comma-separated integers, got '{batch_sizes}'")
    if not sizes or sizes[0] < 1:
        bad("--batch-sizes", "batch sizes must be at least 1")
    if prompt_tokens < 1:
        bad("--prompt-tokens", f"must be at least 1, got {prompt_tokens}")
    if decode_steps < 1:
        bad("--decode-steps", f"must be at least 1, got {decode_steps}")
    if threads is not None and threads < 1:
        bad("--threads", f"must be at least 1, got {threads}")
    # The profile's power sets every energy and cost figure planned on it: check it before the
    # minutes of measuring, not after.
    if power_w is not None and not (math.isfinite(power_w) and power_w > 0):
        bad("--power-w", f"must be a positive number of watts, got {power_w:g}")
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
        emit_json(doc)
        return
    out = console()
    out.print(f"Saved the cpu-local profile to {path}")
    for r in doc["rates"]:
        out.print(
            f"  batch {r['batch']:>3}: prefill {r['prefill_tokens_per_s']:8.1f} tok/s, "
            f"decode {r['decode_tokens_per_s']:8.1f} tok/s"
        )
