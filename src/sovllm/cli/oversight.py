"""`sovllm stop|resume|stops`: the stop switch from the command line, on the server's database.

Running gateways follow the database, so a stop made here takes effect on all of them within
a fraction of a second.
"""

from __future__ import annotations

from typing import Annotated

import typer

from sovllm.cli.common import ConfigOpt, audit_writer, cli_actor, fail, open_db
from sovllm.config import load_settings
from sovllm.governance import oversight

ModelOpt = Annotated[str | None, typer.Option("--model", help="Only this model.")]
TenantOpt = Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")]
AllOpt = Annotated[bool, typer.Option("--all", help="The whole service.")]


def _scope(everything: bool, model: str | None, tenant: str | None) -> tuple[oversight.Scope, str]:
    given = [
        (everything, "all", ""),
        (model is not None, "model", model or ""),
        (tenant is not None, "tenant", tenant or ""),
    ]
    chosen = [(scope, target) for flag, scope, target in given if flag]
    if len(chosen) != 1:
        raise typer.BadParameter(
            "give exactly one of --all, --model M, --tenant T", param_hint="--all/--model/--tenant"
        )
    scope, target = chosen[0]
    if scope != "all" and not target.strip():
        raise typer.BadParameter("must not be empty", param_hint=f"--{scope}")
    return scope, target  # type: ignore[return-value]


def stop(
    everything: AllOpt = False,
    model: ModelOpt = None,
    tenant: TenantOpt = None,
    mode: Annotated[
        str | None,
        typer.Option(
            help="drain: requests in flight finish; cut: they end within a second "
            "\\[the server's stop_mode]."
        ),
    ] = None,
    reason: Annotated[str, typer.Option(help="Shown to users and kept in the audit log.")] = "",
    config: ConfigOpt = None,
) -> None:
    """Halt the service, one model or one tenant (AI Act Art. 14(4)(e)) until `resume`."""
    scope, target = _scope(everything, model, tenant)
    if mode is not None and mode not in ("drain", "cut"):
        raise typer.BadParameter("must be drain or cut", param_hint="--mode")
    db = open_db(config)
    chosen = mode or load_settings(config).stop_mode
    made = oversight.new_stop(scope, target, chosen, reason, cli_actor())  # type: ignore[arg-type]
    try:
        oversight.stop(db, audit_writer(config, db), made)
    except oversight.NoSuchTenant as exc:
        raise fail(f"nothing was stopped: {exc}", 2) from None
    typer.echo(f"stopped {made.what} ({made.mode}); `sovllm resume` lifts it")
    if scope == "model":
        # The pool is in the gateways, not in the database: only they can check the name.
        typer.echo(
            f"the command line cannot see which models the gateways serve: if none serves "
            f"{target!r}, this stops nothing (POST /admin/v1/stop refuses such a name)"
        )


def resume(
    everything: AllOpt = False,
    model: ModelOpt = None,
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Lift a stop."""
    scope, target = _scope(everything, model, tenant)
    db = open_db(config)
    try:
        oversight.resume(db, audit_writer(config, db), cli_actor(), scope, target)
    except oversight.NotStopped:
        what = "the service" if scope == "all" else f"{scope} {target!r}"
        raise fail(f"{what} is not stopped") from None
    typer.echo(f"resumed {'the whole service' if scope == 'all' else f'{scope} {target!r}'}")


def stops(config: ConfigOpt = None) -> None:
    """List the stops in force."""
    found = oversight.list_stops(open_db(config))
    if not found:
        typer.echo("nothing is stopped")
    for s in found:
        why = f": {s.reason}" if s.reason else ""
        typer.echo(f"{s.what}: {s.mode} since {s.as_dict()['created_at']} by {s.actor}{why}")
