"""`sovllm tenants|keys|usage|db`: management offline, on the same database as the server."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sovllm.cli.common import (
    ConfigOpt,
    audit_writer,
    cli_actor,
    fail,
    open_db,
    parse_date,
    record_read,
)
from sovllm.config import ConfigError, load_settings
from sovllm.governance import bootstrap, tenancy, tenants
from sovllm.governance import identity as idn
from sovllm.governance.usage import UsageRow, energy_by_tenant_day
from sovllm.governance.usage import usage as usage_rows

tenants_app = typer.Typer(help="Create, list and delete tenants.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)

Count = Annotated[int | None, typer.Option(min=0)]
_err = Console(stderr=True)


def _limits(
    rpm: int | None, tpm: int | None, max_concurrent: int | None, monthly: int | None
) -> idn.Limits:
    return idn.Limits(rpm, tpm, max_concurrent, monthly)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _limits_text(lim: idn.Limits) -> str:
    parts = [
        f"{name}={value}" for name, value in dataclasses.asdict(lim).items() if value is not None
    ]
    return " ".join(parts) or "-"


# -- tenants -------------------------------------------------------------------------------


@tenants_app.command("create")
def tenants_create(
    name: str,
    rpm: Count = None,
    tpm: Count = None,
    max_concurrent: Count = None,
    monthly_tokens: Count = None,
    weight: Annotated[float, typer.Option(min=0.001, help="Share under contention.")] = 1.0,
    review_policy: Annotated[
        str, typer.Option(help="Human review: none, hold or sample:P (docs/oversight.md).")
    ] = "none",
    config: ConfigOpt = None,
) -> None:
    """Create a tenant (a department sharing the service)."""
    db = open_db(config)
    limits = _limits(rpm, tpm, max_concurrent, monthly_tokens)
    new = tenancy.NewTenant(name, limits, weight, review_policy=review_policy)
    try:
        t = tenancy.create_tenant(db, audit_writer(config, db), cli_actor(), new)
    except idn.IdentityError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"created tenant {t.name}")


@tenants_app.command("list")
def tenants_list(
    as_json: Annotated[bool, typer.Option("--json")] = False, config: ConfigOpt = None
) -> None:
    """List tenants with their limits."""
    rows = tenants.list_tenants(open_db(config))
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(t) for t in rows], indent=2))
        return
    table = Table("tenant", "weight", "limits", "review", "active keys", "created")
    for t in rows:
        limits, keys, created = _limits_text(t.limits), str(t.active_keys), _when(t.created_at)
        table.add_row(t.name, f"{t.weight:g}", limits, t.review_policy, keys, created)
    Console().print(table)


@tenants_app.command("delete")
def tenants_delete(
    name: str,
    force: Annotated[bool, typer.Option(help="Revoke its live keys too.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Delete a tenant. Refused while it has live keys, unless --force revokes them."""
    db = open_db(config)
    try:
        revoked = tenancy.delete_tenant(db, audit_writer(config, db), cli_actor(), name, force)
    except idn.IdentityError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"deleted tenant {name}" + (f", revoked {revoked} key(s)" if revoked else ""))


# -- keys ----------------------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant; created if it does not exist.")],
    role: Annotated[
        idn.Role, typer.Option(help="user, auditor, admin or reviewer.")
    ] = idn.Role.USER,
    rpm: Count = None,
    tpm: Count = None,
    max_concurrent: Count = None,
    monthly_tokens: Count = None,
    expires: Annotated[str | None, typer.Option(help="Expiry date, YYYY-MM-DD.")] = None,
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Create an API key. The key is printed once, alone on the last line of stdout."""
    expires_at = parse_date(expires, "--expires").timestamp() if expires else None
    if expires_at is not None and expires_at <= dt.datetime.now(dt.UTC).timestamp():
        raise typer.BadParameter("the expiry date is in the past", param_hint="--expires")
    db = open_db(config)
    write, who = audit_writer(config, db), cli_actor()
    if tenant not in {t.name for t in tenants.list_tenants(db)}:
        try:
            tenancy.create_tenant(db, write, who, tenancy.NewTenant(tenant))
        except idn.IdentityError as exc:
            raise fail(str(exc)) from None
        typer.echo(f"created tenant {tenant}", err=True)
    limits = _limits(rpm, tpm, max_concurrent, monthly_tokens)
    new = tenancy.NewKey(tenant, role, limits, expires_at, name)
    try:
        raw, info = tenancy.create_key(db, write, who, new)
    except idn.IdentityError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"created key {info.id} ({info.role}) for tenant {tenant}; it is shown only once:")
    typer.echo(raw)


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    config: ConfigOpt = None,
) -> None:
    """List keys (never the keys themselves: only their visible prefix)."""
    db = open_db(config)
    try:
        rows = tenants.list_keys(db, tenant)
    except idn.IdentityError as exc:
        raise fail(str(exc)) from None
    record_read(config, db, "keys", {"tenant": tenant}, len(rows))
    if as_json:
        out = [dataclasses.asdict(k) | {"active": k.active} for k in rows]
        typer.echo(json.dumps(out, indent=2))
        return
    table = Table("id", "prefix", "tenant", "role", "limits", "expires", "status")
    table.columns[0].no_wrap = table.columns[1].no_wrap = True
    for k in rows:
        status = "revoked" if k.revoked_at else "active" if k.active else "expired"
        limits = _limits_text(k.limits)
        table.add_row(k.id, k.prefix + "…", k.tenant, k.role, limits, _when(k.expires_at), status)
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, config: ConfigOpt = None) -> None:
    """Revoke a key: it stops working at once, on every gateway."""
    db = open_db(config)
    try:
        info = tenancy.revoke_key(db, audit_writer(config, db), cli_actor(), key_id)
    except idn.IdentityError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"revoked key {info.id} ({info.prefix}…)")


@keys_app.command("bootstrap")
def keys_bootstrap(
    show: Annotated[
        bool, typer.Option("--print", help="Print the key once, then delete its file.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """The first admin key, which the server wrote to a file (0600) instead of its log."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    if not show:
        path = bootstrap.bootstrap_key_path(settings.data_dir)
        state = "is waiting to be read" if path.exists() else "is not there"
        read = f"`{bootstrap.READ_COMMAND}` prints it once and deletes it"
        typer.echo(f"the bootstrap admin key file {path} {state}; {read}")
        return
    try:
        key = bootstrap.take_key(settings.data_dir)
    except bootstrap.BootstrapKeyError as exc:
        raise fail(str(exc)) from None
    typer.echo("the first admin key (tenant 'admin'); its file is deleted, store it now:", err=True)
    typer.echo(key)


# -- usage and db --------------------------------------------------------------------------


def usage(
    tenant: Annotated[str | None, typer.Option()] = None,
    since: Annotated[str | None, typer.Option(help="First day, YYYY-MM-DD.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    energy: Annotated[
        bool, typer.Option("--energy", help="Joules, kWh and CO2e per tenant and day.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Requests and tokens per key, tenant and day."""
    first = parse_date(since, "--since").date() if since else None
    db = open_db(config)
    rows = usage_rows(db, tenant, first)
    record_read(config, db, "usage", {"tenant": tenant, "since": since}, len(rows))
    if energy:
        _energy_report(rows, as_json)
        return
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        return
    table = Table("day", "tenant", "key", "requests", "prompt tokens", "completion tokens")
    for r in rows:
        counts = (str(r.requests), str(r.prompt_tokens), str(r.completion_tokens))
        table.add_row(r.day, r.tenant, r.key_prefix + "…", *counts)
    Console().print(table)


def _energy_report(rows: list[UsageRow], as_json: bool) -> None:
    sums = energy_by_tenant_day(rows)
    if as_json:
        out = [dataclasses.asdict(e) | {"kwh": e.kwh} for e in sums]
        typer.echo(json.dumps(out, indent=2))
        return
    table = Table("day", "tenant", "requests", "joules", "kWh", "CO2e g", "source")
    for e in sums:
        # A month rolled up past retention keeps its joules but not their source.
        source = e.source or ("rolled up" if len(e.day) == 7 else "none")
        table.add_row(
            e.day,
            e.tenant,
            str(e.requests),
            f"{e.joules:.1f}",
            f"{e.kwh:.6f}",
            f"{e.co2e_g:.3f}",
            source,
        )
    Console().print(table)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Apply the database migrations (the server also does this at start-up)."""
    db = open_db(config)
    typer.echo(f"database at the latest schema ({db.backend})")
