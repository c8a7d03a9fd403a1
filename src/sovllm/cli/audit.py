"""`sovllm audit verify|prove|export|checkpoint|key`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from sovllm.cli.common import ConfigOpt, cli_actor, fail, open_db, parse_date, record_read
from sovllm.cli.models import allowlist_problems
from sovllm.config import ConfigError, load_settings
from sovllm.governance.audit import key_path, open_audit, open_signer
from sovllm.governance.audit.checkpoint import CheckpointError, Verifier
from sovllm.governance.audit.export import ExportError, export_lines, verify_export
from sovllm.governance.audit.keys import rotate_signing_key
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.audit.lookup import inclusion
from sovllm.governance.audit.report import Report
from sovllm.governance.audit.verify import verify_log

audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)


def _log(config: Path | None) -> AuditLog:
    db = open_db(config)
    try:
        return open_audit(load_settings(config), db)
    except ConfigError as exc:
        raise fail(str(exc), 2) from None


def _verifier(key: str | None, log: AuditLog | None) -> Verifier:
    if key is None:
        assert log is not None
        return log.signer.verifier
    text = Path(key).read_text() if Path(key).is_file() else key
    try:
        return Verifier.decode(text)
    except CheckpointError as exc:
        raise typer.BadParameter(str(exc), param_hint="--key") from None


def _read(path: Path, flag: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}", param_hint=flag) from None


def _finish(report: Report) -> None:
    typer.echo(report.summary())
    for problem in report.problems[1:]:
        typer.echo(f"  also: {problem}")
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("verify")
def verify(
    against: Annotated[
        Path | None, typer.Option(help="Also check this signed checkpoint (a witness's copy).")
    ] = None,
    offline: Annotated[
        Path | None, typer.Option(help="Verify this export file instead of the database.")
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="With --offline: the signed checkpoint to check against.")
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(help="Verifier key (or a file with it); default: this server's key."),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Recompute the tree, check every entry, signature and checkpoint; name the first bad entry."""
    if checkpoint is not None and offline is None:
        raise typer.BadParameter(
            "only applies with --offline; a witness's checkpoint for the database is --against",
            param_hint="--checkpoint",
        )
    against_note = _read(against, "--against") if against else None
    if offline is not None:
        lines = _read(offline, "--offline").splitlines()
        note = _read(checkpoint, "--checkpoint") if checkpoint else None
        log = _log(config) if key is None else None
        try:
            report = verify_export(lines, _verifier(key, log), note or against_note)
        except ExportError as exc:
            raise fail(f"{offline}: {exc}") from None
        _finish(report)
        return
    log = _log(config)
    tampered = allowlist_problems(log)  # the model allow-list is signed with the log's key
    for line in tampered:
        typer.echo(f"FAIL: {line}")
    _finish(verify_log(log, _verifier(key, log), against_note))
    if tampered:
        raise typer.Exit(1)


@audit_app.command("prove")
def prove(request_id: str, config: ConfigOpt = None) -> None:
    """Print the inclusion proof of a request's entries (JSON)."""
    log = _log(config)
    try:
        proof = inclusion(log.db, request_id)
    except LookupError as exc:
        raise fail(str(exc)) from None
    entries = proof["entries"]
    count = len(entries) if isinstance(entries, list) else 0
    record_read(config, log.db, "audit.prove", {"request_id": request_id}, count)
    typer.echo(json.dumps(proof, indent=2))


@audit_app.command("export")
def export(
    since: Annotated[str | None, typer.Option(help="First day or time (ISO 8601).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Write the log as JSONL on stdout, verifiable with `verify --offline`. No keys or secrets."""
    start = parse_date(since, "--since").timestamp() if since else None
    log = _log(config)
    lines = list(export_lines(log.db, start, log.signer.verifier))
    count = sum(1 for line in lines[1:] if "seq" in json.loads(line))
    record_read(config, log.db, "audit.export", {"since": since}, count)
    for line in lines:
        sys.stdout.write(line + "\n")


@audit_app.command("checkpoint")
def checkpoint(
    out: Annotated[
        Path | None, typer.Option(help="Folder to write checkpoint-SIZE.txt into (a witness).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Sign a checkpoint of the log as it is now."""
    if out is not None:
        try:  # before signing; not parents: a mistyped witness path is an error
            out.mkdir(exist_ok=True)
        except OSError as exc:
            raise fail(f"cannot write a checkpoint into {out}: {exc.strerror or exc}", 2) from None
    log = _log(config)
    try:
        note = log.checkpoint()
    except CheckpointError as exc:
        raise fail(f"no checkpoint was signed: {exc}") from None
    if out is None:
        typer.echo(note, nl=False)
        return
    size = note.split("\n")[1]
    path = out / f"checkpoint-{size}.txt"
    path.write_text(note, encoding="utf-8")
    typer.echo(str(path))


@audit_app.command("key")
def key(config: ConfigOpt = None) -> None:
    """Print the log's verifier (public) key, for witnesses and offline verification."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    typer.echo(open_signer(settings).verifier.encode())


@audit_app.command("rotate-signing-key")
def rotate_key(
    new_key_file: Annotated[
        Path | None,
        typer.Option(
            help="Sign the transition with the key in this file (an Ed25519 seed, 32 "
            "bytes, base64) and write no key file: for an audit.key_file that is a "
            "mounted secret. Restart the servers once the secret is swapped."
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Replace the signing key: a checkpoint signed by the old and the new key links them, so
    a verifier that trusts the old key follows the chain. Interrupted, run it again."""
    log = _log(config)
    settings = load_settings(config)
    if settings.audit.key_file is not None and new_key_file is None:
        raise fail(
            f"audit.key_file {settings.audit.key_file} is a key sovllm only reads (e.g. a "
            "mounted secret), so it cannot replace it: put a new key in a file (`openssl rand "
            "-base64 32 > new.key`), run `sovllm audit rotate-signing-key --new-key-file "
            "new.key`, then point the secret at the new key and restart the servers"
        )
    try:
        done = rotate_signing_key(log, key_path(settings), {"actor": cli_actor()}, new_key_file)
    except (OSError, ValueError, CheckpointError) as exc:
        raise fail(f"the signing key was not rotated: {exc}") from None
    resumed = " (resumed an interrupted rotation)" if done.resumed else ""
    typer.echo(f"signing key rotated at audit entry {done.entry}{resumed}")
    typer.echo(f"old verifier key: {done.old_key}")
    typer.echo(f"new verifier key: {done.new_key}")
    if new_key_file is not None:
        typer.echo(f"now point audit.key_file at {new_key_file} and restart the servers")
