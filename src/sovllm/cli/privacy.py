"""`sovllm privacy erase|purge|policy|mask`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sovllm.cli.common import ConfigOpt, audit_writer, cli_actor, fail, open_db
from sovllm.config import ConfigError, Settings, load_settings
from sovllm.governance import identity as idn
from sovllm.governance import retention, tenancy
from sovllm.governance.audit import open_audit, pseudonym_key_path, records
from sovllm.governance.audit.checkpoint import CheckpointError
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.privacy import erasure, pseudonyms
from sovllm.governance.privacy.content import (
    POLICIES,
    master_key_path,
    open_vault,
)
from sovllm.governance.privacy.masterkey import MasterKeyError, Rotated, next_path, rotate
from sovllm.store.db import Database


def _audit(settings: Settings, db: Database) -> AuditLog:
    try:
        return open_audit(settings, db)
    except ConfigError as exc:  # e.g. a pseudonym key file the log does not record
        raise fail(str(exc), 2) from None


def _change(config: Path | None, change: tenancy.TenantChange) -> None:
    """A tenant's privacy setting, changed as the admin API changes it: one `tenant.update`
    audit entry with the CLI's actor, then the change."""
    db = open_db(config)
    try:
        tenancy.update_tenant(db, audit_writer(config, db), cli_actor(), change)
    except (idn.IdentityError, LookupError) as exc:
        raise fail(str(exc)) from None


privacy_app = typer.Typer(
    help="Personal data: erasure, retention, content policy.", no_args_is_help=True
)


@privacy_app.command("erase")
def erase(
    subject: Annotated[
        str, typer.Option(help="The `user` value the subject's requests carried, or key:<id>.")
    ],
    config: ConfigOpt = None,
) -> None:
    """Crypto-shred a data subject's stored content; print the signed receipt (JSON)."""
    if not subject.strip():  # an empty shell variable: a receipt would name nobody
        raise typer.BadParameter("must not be empty", param_hint="--subject")
    db = open_db(config)  # first: it names a bad setting (exit 2) instead of a traceback
    settings = load_settings(config)
    audit = _audit(settings, db)
    try:
        receipt = erasure.erase(open_vault(settings, db), audit, subject, cli_actor())
    except (erasure.ErasureError, CheckpointError) as exc:
        raise fail(str(exc)) from None
    typer.echo(json.dumps(receipt, indent=2))


@privacy_app.command("purge")
def purge(config: ConfigOpt = None) -> None:
    """Apply retention now, as the server's job does: delete stored content past content_days,
    prune audit entries past audit_days (their hashes stay), roll usage past usage_days up per
    tenant and month."""
    db = open_db(config)  # first: it names a bad setting (exit 2) instead of a traceback
    settings = load_settings(config)
    r = settings.retention
    done = retention.run(r, open_vault(settings, db), _audit(settings, db), cli_actor())
    typer.echo(f"purged {done.content_records} stored content record(s)")
    typer.echo(
        f"pruned {done.audit_entries} audit entries older than {r.audit_days} days "
        "(their hashes stay)"
    )
    typer.echo(
        f"rolled up {done.usage_rows} usage day row(s) older than {r.usage_days} days into months"
    )


@privacy_app.command("policy")
def policy(
    tenant: str,
    value: Annotated[str, typer.Argument(help="none, redacted or full")],
    config: ConfigOpt = None,
) -> None:
    """Set what of a tenant's prompts and answers is kept (encrypted per data subject)."""
    if value not in POLICIES:
        raise typer.BadParameter(f"must be one of {', '.join(POLICIES)}", param_hint="VALUE")
    _change(config, tenancy.TenantChange(tenant, content_policy=value))
    typer.echo(f"tenant {tenant}: content policy {value}")


@privacy_app.command("mask")
def mask(
    tenant: str, on: Annotated[bool, typer.Argument(help="true or false")], config: ConfigOpt = None
) -> None:
    """Mask personal data before a tenant's prompts reach the model (unmaskable ones refused)."""
    _change(config, tenancy.TenantChange(tenant, mask_prompts=on))
    typer.echo(f"tenant {tenant}: prompts masked before the model: {'on' if on else 'off'}")


@privacy_app.command("rotate-master-key")
def rotate_master_key(
    new_key_file: Annotated[
        Path | None,
        typer.Option(
            help="Re-wrap under the key in this file (32 random bytes, base64) and "
            "write no key file: for a privacy.master_key_file that is a mounted "
            "secret. Stop the servers first; start them once the secret is swapped."
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Re-wrap every data subject's key under a new master key, in one transaction.

    Interrupted, it resumes where it stopped when run again (the new key waits in
    master.key.next). Erased subjects stay erased; stored content stays readable."""
    db = open_db(config)  # first: it names a bad setting (exit 2) instead of a traceback
    settings = load_settings(config)
    configured = settings.privacy.master_key_file
    if configured is not None and new_key_file is None:
        raise fail(
            f"privacy.master_key_file {configured} is a key sovllm only reads (e.g. a mounted "
            "secret), so it cannot replace it: put a new key in a file (`openssl rand "
            "-base64 32 > new.key`), stop the servers, run `sovllm privacy "
            "rotate-master-key --new-key-file new.key`, then point the secret at the new key "
            "and start them"
        )
    path = master_key_path(settings)
    if configured is None:
        open_vault(settings, db)  # a fresh data folder has no key yet: make it first
    audit = _audit(settings, db)

    def record(done: Rotated) -> None:  # before the swap: no completed rotation without it
        fields = records.master_key_rotated(
            cli_actor(), done.old_id, done.new_id, done.rewrapped, done.resumed
        )
        audit.append(records.MASTER_ROTATED, fields).result(timeout=30)

    try:
        done = rotate(db, path, new_key_file, before_swap=record)
    except (MasterKeyError, OSError) as exc:
        side = next_path(path)
        keep = (
            f"; do not delete {side} (servers may already wrap new subject keys under it): "
            "fix the cause and rerun `sovllm privacy rotate-master-key`"
            if new_key_file is None and side.exists()
            else ""
        )
        raise fail(f"the master key was not rotated: {exc}{keep}") from None
    resumed = " (resumed an interrupted rotation)" if done.resumed else ""
    typer.echo(
        f"master key {done.old_id} -> {done.new_id}: re-wrapped {done.rewrapped} "
        f"subject key(s){resumed}"
    )
    if new_key_file is not None:
        typer.echo(
            f"now point privacy.master_key_file at {new_key_file} and restart; keep the "
            "old key until then"
        )


@privacy_app.command("rotate-pseudonym-key")
def rotate_pseudonym_key(
    new_key_file: Annotated[
        Path | None,
        typer.Option(
            help="Record the epoch of the key in this file (32 random bytes, base64) "
            "and write no key file: for a privacy.pseudonym_key_file that is a mounted "
            "secret, swapped by its owner right after (servers re-read it)."
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Start a new pseudonym epoch: from now on the same user has a different pseudonym in the
    audit log. Earlier entries keep theirs and still verify. Interrupted, run it again."""
    db = open_db(config)  # first: it names a bad setting (exit 2) instead of a traceback
    settings = load_settings(config)
    configured = settings.privacy.pseudonym_key_file
    if configured is not None and new_key_file is None:
        raise fail(
            f"privacy.pseudonym_key_file {configured} is a key sovllm only reads (e.g. a "
            "mounted secret), so it cannot replace it: put a new key in a file (`openssl rand "
            "-base64 32 > new.key`), run `sovllm privacy rotate-pseudonym-key --new-key-file "
            "new.key`, then point the secret at the new key"
        )
    audit = _audit(settings, db)
    assert audit.pseudonyms_retired is not None  # open_audit sets it
    try:
        done = pseudonyms.rotate_pseudonym_key(
            audit,
            pseudonym_key_path(settings),
            audit.pseudonyms_retired,
            {"actor": cli_actor()},
            new_key_file,
            open_vault(settings, db),
        )
    except (OSError, ValueError, MasterKeyError) as exc:
        raise fail(f"the pseudonym key was not rotated: {exc}") from None
    resumed = " (resumed an interrupted rotation)" if done.resumed else ""
    typer.echo(
        f"pseudonym epoch {done.epoch} (key {done.key_id}) from audit entry {done.entry}{resumed}"
    )
