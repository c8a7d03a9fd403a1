"""`sovllm privacy erase|purge|policy`."""

from __future__ import annotations

import getpass
import json
from typing import Annotated

import typer

from sovllm.admin_cli import ConfigOpt, _fail, _open, cli_actor
from sovllm.config import load_settings
from sovllm.governance.audit import open_audit
from sovllm.governance.privacy import erasure
from sovllm.governance.privacy.content import POLICIES, open_vault, set_masking, set_policy

privacy_app = typer.Typer(help="Personal data: erasure, retention, content policy.",
                          no_args_is_help=True)  # fmt: skip


@privacy_app.command("erase")
def erase(
    subject: Annotated[
        str, typer.Option(help="The `user` value the subject's requests carried, or key:<id>.")
    ],
    config: ConfigOpt = None,
) -> None:
    """Crypto-shred a data subject's stored content; print the signed receipt (JSON)."""
    settings = load_settings(config)
    db = _open(config)
    audit = open_audit(settings, db)
    receipt = erasure.erase(open_vault(settings.data_dir, db), audit, subject, cli_actor())
    typer.echo(json.dumps(receipt, indent=2))


@privacy_app.command("purge")
def purge(config: ConfigOpt = None) -> None:
    """Delete stored content older than retention.content_days (audit hashes stay)."""
    settings = load_settings(config)
    db = _open(config)
    removed = open_vault(settings.data_dir, db).purge(settings.retention.content_days)
    open_audit(settings, db).append(
        "privacy.purge",
        {"actor": {"cli": getpass.getuser()}, "content_records": removed,
         "older_than_days": settings.retention.content_days},
    ).result()  # fmt: skip
    typer.echo(f"purged {removed} stored content record(s)")


@privacy_app.command("policy")
def policy(tenant: str, value: Annotated[str, typer.Argument(help="none, redacted or full")],
           config: ConfigOpt = None) -> None:  # fmt: skip
    """Set what of a tenant's prompts and answers is kept (encrypted per data subject)."""
    if value not in POLICIES:
        raise typer.BadParameter(f"must be one of {', '.join(POLICIES)}", param_hint="VALUE")
    db = _open(config)
    try:
        set_policy(db, tenant, value)
    except LookupError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"tenant {tenant}: content policy {value}")


@privacy_app.command("mask")
def mask(tenant: str, on: Annotated[bool, typer.Argument(help="true or false")],
         config: ConfigOpt = None) -> None:  # fmt: skip
    """Mask personal data before a tenant's prompts reach the model (unmaskable ones refused)."""
    db = _open(config)
    try:
        set_masking(db, tenant, on)
    except LookupError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"tenant {tenant}: prompts masked before the model: {'on' if on else 'off'}")
