"""`sovllm plan ...` commands: size, predict, calibrate, validate, one module each."""

from __future__ import annotations

import typer

from sovllm.planner.cli.calibrate import calibrate
from sovllm.planner.cli.predict import predict
from sovllm.planner.cli.size import size_cmd
from sovllm.planner.cli.validate import validate

plan_app = typer.Typer(
    help="Size hardware, parallelism, replicas, cost and energy for N users.",
    no_args_is_help=True,
)
plan_app.command()(predict)
plan_app.command("size")(size_cmd)
plan_app.command()(calibrate)
plan_app.command()(validate)

__all__ = ["plan_app"]
