"""What the `sovllm plan` commands share: usage errors that name their flag, catalog look-ups,
the lengths flags, and the console. Checks of values belong to the planner's types
(`Scenario.check`, `SizingQuestion.check`); these helpers only turn flags into them and their
errors back into flags."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

from sovllm.planner.catalog import get_engine, get_hardware, get_model
from sovllm.planner.errors import PlannerError, ScenarioError
from sovllm.planner.specs import PRECISIONS, Engine, Hardware, Model
from sovllm.planner.workload import Lengths, read_lengths_file

LENGTHS_FROM_HELP = (
    'JSONL file, one {"input_tokens": N, "output_tokens": M} a line, taken in file order '
    "(replaces the token flags)."
)

# The flag of each field a planner type names in its errors (the rest are given per command).
FLAGS = {
    "tp": "--tp",
    "pp": "--pp",
    "num_gpus": "--num-gpus",
    "requests": "--requests",
    "max_num_seqs": "--max-num-seqs",
    "kv_precision": "--kv-precision",
    "cached_fraction": "--cached-prompt-fraction",
    "load.think": "--think-time",
    "think_time_s": "--think-time",
    "users": "--users",
    "max_tp": "--max-tp",
    "rank_by": "--rank-by",
    "currency": "--currency",
    "years": "--years",
    "pue": "--pue",
    "usd_rate": "--usd-rate",
    "electricity_price": "--electricity-price",
    "hosting_per_year": "--hosting-per-year",
    "staff_per_year": "--staff-per-year",
    "grid_kg_per_kwh": "--grid-intensity",
    "gpu_price": "--gpu-price",
    "cloud_price": "--cloud-price",
    "slo.ttft": "--ttft-p95",
    "slo.tpot": "--tpot-p95",
    "gpus": "--gpus",
    "precisions": "--precisions",
    "model": "--model",
}


def console() -> Console:
    # Wide enough that the tables stay readable when piped into a file or a test runner.
    return Console(width=None if sys.stdout.isatty() else 150)


def bad(flag: str, message: str) -> NoReturn:
    raise typer.BadParameter(message, param_hint=f"'{flag}'")


def bad_value(exc: ScenarioError, lengths_flag: str, **flags: str) -> NoReturn:
    """The usage error for a planner type's complaint, naming the flag that set the field."""
    if exc.field == "lengths":
        what = (
            "its lengths"
            if lengths_flag == "--lengths-from"
            else f"{lengths_flag} + --output-tokens"
        )
        bad(lengths_flag, f"{what} {exc.detail}")
    bad(flags.get(exc.field) or FLAGS.get(exc.field, f"--{exc.field}"), exc.detail)


def emit_json(doc: dict[str, Any]) -> None:
    typer.echo(json.dumps(doc, indent=2, sort_keys=False))


def lengths(flag: str, text: str) -> Lengths:
    try:
        return Lengths.parse(text)
    except ValueError as exc:
        bad(flag, str(exc))


def workload_lengths(
    prompt_flag: str, prompt_text: str | None, output_text: str | None, lengths_from: str | None
) -> tuple[Lengths, Lengths, str]:
    """Prompt and output lengths from the token flags or a lengths file, and the flag that
    set the prompt lengths (for errors about them)."""
    if lengths_from is not None:
        if prompt_text is not None or output_text is not None:
            bad(
                "--lengths-from",
                f"give either --lengths-from or {prompt_flag} and --output-tokens, not both",
            )
        try:
            prompt, out = read_lengths_file(Path(lengths_from))
        except ValueError as exc:
            bad("--lengths-from", str(exc))
        return prompt, out, "--lengths-from"
    if prompt_text is None:
        bad(prompt_flag, f"give {prompt_flag} (or --lengths-from FILE.jsonl)")
    if output_text is None:
        bad("--output-tokens", "give --output-tokens (or --lengths-from FILE.jsonl)")
    return lengths(prompt_flag, prompt_text), lengths("--output-tokens", output_text), prompt_flag


def model(name: str) -> Model:
    try:
        return get_model(name)
    except PlannerError as exc:
        bad("--model", str(exc))


def hardware(name: str, flag: str) -> Hardware:
    try:
        return get_hardware(name)
    except PlannerError as exc:
        bad(flag, str(exc))


def engine(name: str) -> Engine:
    try:
        return get_engine(name)
    except PlannerError as exc:
        bad("--engine", str(exc))


def file_precision(m: Model, flag: str, chosen: list[str], given: str | None) -> list[str]:
    """A GGUF's weights have one precision: it replaces the default, and contradicts a flag."""
    normal = [p.strip().lower() for p in chosen]
    if m.file_precision is None:
        return normal
    for p in normal:
        if p not in PRECISIONS:
            bad(flag, f"unknown precision '{p}'; choose from {', '.join(PRECISIONS)}")
    if given is not None and any(p != m.file_precision for p in normal):
        bad(flag, f"{m.name} is stored in {m.file_precision}; its precision cannot be changed")
    return [m.file_precision]


def split(text: str) -> list[str]:
    """Comma-separated names, each once, in the order given."""
    return list(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))


def profile_model(m: Model, hw: Hardware) -> None:
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
        bad(
            "--model",
            f"the {hw.name} profile was measured with {doc['model']}; its rates do not apply to "
            f"{m.name} (run `sovllm plan calibrate --model ...` for that model)",
        )


def simulation_failed(flag: str, exc: Exception, hint: str) -> NoReturn:
    bad(flag, f"{exc}; {hint}")
