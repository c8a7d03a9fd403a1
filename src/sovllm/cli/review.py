"""`sovllm review list|show|approve|override|policy`: the human review queue from the command
line (AI Act Art. 14(4)(b)-(d); docs/oversight.md), on the same database as the server.

Every read is an `access.read` entry and every decision a `review.decided` entry with the
command line's actor (user and host), durable before anything is shown or changed.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sovllm.cli.common import ConfigOpt, audit_writer, cli_actor, fail, open_db, record_read
from sovllm.config import ConfigError, load_settings
from sovllm.governance import identity as idn
from sovllm.governance import review, tenancy
from sovllm.governance.audit import open_audit
from sovllm.governance.privacy.content import open_vault
from sovllm.governance.review_view import content_view
from sovllm.store.db import Database

review_app = typer.Typer(
    help="Human review of answers: the queue, approve, override, a tenant's policy.",
    no_args_is_help=True,
)
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _writer(config: Path | None, db: Database) -> review.RequestWrite:
    """Audit entries naming their request, each durable before the decision is made."""
    try:
        audit = open_audit(load_settings(config), db)
    except ConfigError as exc:
        raise fail(str(exc), 2) from None

    def write(kind: str, fields: dict[str, Any], request_id: str) -> None:
        audit.append(kind, fields, request_id).result()

    return write


@review_app.command("list")
def review_list(
    status: Annotated[str, typer.Option(help="pending, approved, overridden, or all.")] = "pending",
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's answers.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    as_json: Json = False,
    config: ConfigOpt = None,
) -> None:
    """The answers queued for review, oldest first (no content: `show` reads one)."""
    if status != "all" and status not in review.STATUSES:
        raise typer.BadParameter(
            f"must be one of {', '.join(review.STATUSES)} or all", param_hint="--status"
        )
    db = open_db(config)
    rows = review.list_reviews(db, None, None if status == "all" else status, tenant, limit)
    record_read(config, db, "reviews", {"status": status, "tenant": tenant}, len(rows))
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    table = Table("request", "tenant", "mode", "status", "model", "queued", "tokens")
    table.columns[0].no_wrap = True
    for r in rows:
        tokens = f"{r.prompt_tokens}+{r.completion_tokens}"
        table.add_row(r.request_id, r.tenant, r.mode, r.status, r.model, _when(r.queued_at), tokens)
    Console().print(table)
    if not rows:
        typer.echo(f"no {status if status != 'all' else ''} reviews".replace("  ", " "))


@review_app.command("show")
def review_show(request_id: str, as_json: Json = False, config: ConfigOpt = None) -> None:
    """One answer under review, with its content as the tenant's content policy allows."""
    db = open_db(config)
    try:
        info = review.get_review(db, request_id, None)
    except idn.IdentityError as exc:
        raise fail(str(exc)) from None
    view = content_view(db, open_vault(load_settings(config), db), info)
    shown = sum(text is not None for text in (view.prompt, view.answer))
    record_read(config, db, "review.content", {"request_id": request_id}, shown)
    if as_json:
        typer.echo(json.dumps({**info.as_dict(), "content": view.as_dict()}, indent=2))
        return
    typer.echo(f"request   {info.request_id} ({info.route})")
    typer.echo(f"tenant    {info.tenant}, key {info.key_id}")
    typer.echo(f"model     {info.model} (weights {info.weights_sha256 or 'unknown'})")
    typer.echo(f"review    {info.mode}: {info.status} (queued {_when(info.queued_at)})")
    typer.echo(f"tokens    {info.prompt_tokens} prompt + {info.completion_tokens} completion")
    typer.echo(f"finish    {info.finish_reason}")
    if info.decided_at is not None:
        who = json.dumps(info.reviewer, sort_keys=True)
        typer.echo(f"decided   {_when(info.decided_at)} by {who}")
    if info.note:
        typer.echo(f"note      {info.note}")
    typer.echo(f"content   shown as the content policy {view.shown} allows")
    if view.note:
        typer.echo(f"          {view.note}")
    for label, text in (("prompt", view.prompt), ("answer", view.answer)):
        if text is not None:
            typer.echo(f"--- {label} ---")
            typer.echo(text)


def _decide(config: Path | None, request_id: str, decision: str, note: str | None) -> None:
    db = open_db(config)
    try:
        review.check_decision(db, request_id, decision, note, None)
        info = review.decide(db, _writer(config, db), cli_actor(), request_id, decision, note)
    except idn.IdentityError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"review {info.request_id}: {info.status}")


@review_app.command("approve")
def review_approve(
    request_id: str,
    note: Annotated[str | None, typer.Option(help="Why (optional).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Approve an answer: a held one may now be fetched by its client."""
    _decide(config, request_id, "approve", note)


@review_app.command("override")
def review_override(
    request_id: str,
    note: Annotated[str, typer.Option(help="Why the answer is disregarded (required).")],
    config: ConfigOpt = None,
) -> None:
    """Disregard an answer, with a note: a held one is never delivered; the client sees the
    note on GET /v1/chat/completions/{id}."""
    if not note.strip():
        raise typer.BadParameter("must say why the answer is disregarded", param_hint="--note")
    _decide(config, request_id, "override", note)


@review_app.command("policy")
def review_policy(
    tenant: str,
    value: Annotated[str, typer.Argument(help="none, hold or sample:P (0 < P <= 100).")],
    config: ConfigOpt = None,
) -> None:
    """Set a tenant's review policy (recorded as a `tenant.update` audit entry)."""
    try:
        policy = str(review.parse_policy(value))
    except review.PolicyError as exc:
        raise typer.BadParameter(str(exc), param_hint="VALUE") from None
    db = open_db(config)
    change = tenancy.TenantChange(tenant, review_policy=policy)
    try:
        tenancy.update_tenant(db, audit_writer(config, db), cli_actor(), change)
    except idn.IdentityError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"tenant {tenant}: review policy {policy}")
