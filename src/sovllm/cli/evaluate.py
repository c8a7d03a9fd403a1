"""`sovllm eval`: run a bundled suite against the served model and record the scores, with the
weights' hash and the suite's version, in the audit log (`model.eval`). Exits 1 when a check
is below its threshold: that evaluation then blocks `sovllm models approve` of those weights."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import openai
import typer

from sovllm.cli.common import EXIT_USAGE, ConfigOpt, append_audit, cli_actor, fail, open_db
from sovllm.config import ConfigError, load_settings
from sovllm.evaluation.runner import EvalError, run_suite
from sovllm.evaluation.suites import SuiteError, load_suite
from sovllm.governance.audit import records
from sovllm.governance.provenance import entries


def _default_url(config: Path | None) -> str:
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    return f"http://{host}:{settings.port}"


def evaluate(
    suite: Annotated[
        str, typer.Option(help="A bundled suite's name, or the path of a suite JSON file.")
    ] = "default",
    url: Annotated[
        str | None, typer.Option(help="The server's base URL \\[http://host:port from settings].")
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="An API key (or SOVLLM_API_KEY).", show_default=False)
    ] = None,
    model: Annotated[str | None, typer.Option(help="The model id, if several are served.")] = None,
    output: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
    config: ConfigOpt = None,
) -> None:
    """Evaluate the served model (accuracy, refusals, prompt injection, personal-data leakage,
    stability at temperature 0) and record the scores in the audit log."""
    if output not in ("text", "json"):
        raise typer.BadParameter("must be text or json", param_hint="--format")
    key = key or os.environ.get("SOVLLM_API_KEY")
    if not key:
        raise typer.BadParameter("give an API key (or set SOVLLM_API_KEY)", param_hint="--key")
    try:
        chosen = load_suite(suite)
    except SuiteError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    base = (url or _default_url(config)).rstrip("/")
    db = open_db(config)
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, timeout=300, max_retries=0)
    say = (lambda m: typer.echo(m, err=True)) if output == "json" else typer.echo
    try:
        result = run_suite(client, chosen, model, progress=say)
    except EvalError as exc:
        raise fail(f"{base}: {exc}") from None
    body = entries.evaluated(
        cli_actor(),
        result.model,
        result.sha256,
        chosen.name,
        chosen.version,
        result.scores,
        result.thresholds,
        base,
    )
    append_audit(config, db, records.MODEL_EVAL, body)
    if output == "json":
        failures = {c.name: c.failures for c in result.checks}
        typer.echo(json.dumps({**body, "failures": failures}, indent=2))
    else:
        sha = result.sha256 or "unknown (the server does not report it)"
        typer.echo(f"{result.model} (weights sha256 {sha}), suite {chosen.name} v{chosen.version}")
        for c in result.checks:
            mark = "ok  " if c.score >= c.threshold else "FAIL"
            typer.echo(
                f"  {mark} {c.name}: {c.score:.2f} ({c.passed_items}/{c.items}), "
                f"threshold {c.threshold:.2f}"
            )
            for line in c.failures:
                typer.echo(f"       failed: {line}")
        typer.echo("recorded in the audit log (model.eval)")
    if not result.passed:
        raise typer.Exit(1)
