"""`sovllm privacy erase|purge|policy|mask`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from sovllm.admin_cli import ConfigOpt, _fail, _open, cli_actor
from sovllm.config import load_settings
from sovllm.governance import retention
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
    db = _open(config)  # first: it names a bad setting (exit 2) instead of a traceback
    settings = load_settings(config)
    audit = open_audit(settings, db)
    receipt = erasure.erase(open_vault(settings, db), audit, subject, cli_actor())
    typer.echo(json.dumps(receipt, indent=2))


@privacy_app.command("purge")
def purge(config: ConfigOpt = None) -> None:
    """Apply retention now, as the server's job does: delete stored content past content_days,
    prune audit entries past audit_days (their hashes stay), roll usage past usage_days up per
    tenant and month."""
    db = _open(config)  # first: it names a bad setting (exit 2) instead of a traceback
    settings = load_settings(config)
    r = settings.retention
    done = retention.run(r, open_vault(settings, db), open_audit(settings, db),
                         cli_actor())  # fmt: skip
    typer.echo(f"purged {done.content_records} stored content record(s)")
    typer.echo(f"pruned {done.audit_entries} audit entries older than {r.audit_days} days "
               "(their hashes stay)")  # fmt: skip
    typer.echo(f"rolled up {done.usage_rows} usage day row(s) older than {r.usage_days} days "
               "into months")  # fmt: skip


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
