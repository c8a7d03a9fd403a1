"""The `sovllm` command line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from sovllm import __version__
from sovllm.bench.cli import bench
from sovllm.cli.admin import db_app, keys_app, tenants_app, usage
from sovllm.cli.audit import audit_app
from sovllm.cli.backup import backup, restore
from sovllm.cli.common import EXIT_FAILED, EXIT_USAGE, ConfigOpt, fail
from sovllm.cli.compliance import compliance_app
from sovllm.cli.deploy import deploy_app
from sovllm.cli.evaluate import evaluate
from sovllm.cli.incident import incident_app
from sovllm.cli.models import models_app
from sovllm.cli.oversight import resume, stop, stops
from sovllm.cli.privacy import privacy_app
from sovllm.cli.review import review_app
from sovllm.config import ConfigError, Settings, load_settings
from sovllm.planner.cli import plan_app

app = typer.Typer(
    name="sovllm",
    help="A private, compliant ChatGPT-like service on your own hardware.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(plan_app, name="plan")
app.add_typer(deploy_app, name="deploy")
app.command("bench")(bench)
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
app.add_typer(privacy_app, name="privacy")
app.add_typer(review_app, name="review")
app.add_typer(incident_app, name="incident")
app.add_typer(models_app, name="models")
app.command("eval")(evaluate)
app.command("usage")(usage)
app.command("stop")(stop)
app.command("resume")(resume)
app.command("stops")(stops)
app.command("backup")(backup)
app.command("restore")(restore)
app.add_typer(compliance_app, name="compliance")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"sovllm {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """sovllm: plan, serve, govern and benchmark a private LLM service."""
    # Before any command creates a file: the database (and its WAL), keys, logs and profiles
    # in data_dir are the owner's alone (0600, folders 0700). Not for `bench`, whose reports
    # are written outside data_dir to be shared.
    if ctx.invoked_subcommand != "bench":
        from sovllm.datadir import private_umask

        private_umask()


HostOpt = Annotated[str | None, typer.Option(help="Address to bind [127.0.0.1].")]
PortOpt = Annotated[int | None, typer.Option(help="Port to bind [8000].")]
ModelOpt = Annotated[str | None, typer.Option(help="Catalog model name or path of a GGUF file.")]


@app.command()
def serve(
    host: HostOpt = None,
    port: PortOpt = None,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    replicas: Annotated[
        int | None,
        typer.Option(
            "--replicas",
            min=1,
            max=64,
            help="Start N embedded worker processes behind the gateway (besides any in the "
            "config's `replicas`).",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the replicas and their command lines; start nothing."
        ),
    ] = False,
) -> None:
    """Serve the OpenAI-compatible API from the embedded model or a pool of replicas."""
    from sovllm.serve.gateway import run_server

    settings = _settings(config, host, port, model)
    _run(lambda: run_server(settings, replicas=replicas, dry_run=dry_run, config_file=config))


@app.command()
def worker(
    host: HostOpt = None, port: PortOpt = None, config: ConfigOpt = None, model: ModelOpt = None
) -> None:
    """Run one embedded engine as a replica for a gateway (no keys or audit of its own)."""
    from sovllm.serve.worker import run_worker

    settings = _settings(config, host, port, model)
    _run(lambda: run_worker(settings))


def _settings(
    config: Path | None, host: str | None, port: int | None, model: str | None
) -> Settings:
    try:
        return load_settings(config, host=host, port=port, model=model)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None


def _run(start: Callable[[], None]) -> None:
    from sovllm.datadir import LoosePermissions
    from sovllm.serve.gateway import ServeError

    try:
        start()
    except LoosePermissions as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except ServeError as exc:
        raise fail(str(exc), EXIT_FAILED) from None
