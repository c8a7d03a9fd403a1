"""`sovllm backup` and `sovllm restore`: the database and the key files in one encrypted file
(store/backup.py; the format in docs/reliability.md). Each is an audit entry with its actor."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from sovllm import __version__
from sovllm.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    ConfigOpt,
    append_audit,
    cli_actor,
    fail,
    open_db,
)
from sovllm.config import ConfigError, Settings, load_settings
from sovllm.governance.audit import (
    PseudonymKeyError,
    key_path,
    open_audit,
    operations,
    pseudonym_key_path,
    records,
)
from sovllm.governance.audit.verify import verify_database
from sovllm.governance.privacy.content import master_key_path
from sovllm.governance.privacy.masterkey import MasterKeyError
from sovllm.store.backup import (
    BackupError,
    backend_of,
    create_backup,
    empty_database,
    empty_folder,
    restore_database,
    unpack,
)
from sovllm.store.backup_file import BackupFileError, WrongPassphrase, read_header
from sovllm.store.db import Database, DatabaseConfigError, database_url
from sovllm.store.migrate import current_revision, upgrade

PASSPHRASE_ENV = "SOVLLM_BACKUP_PASSPHRASE"
_MIN_PASSPHRASE = 12

PassphraseOpt = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        help=f"File holding the passphrase (else ${PASSPHRASE_ENV}, else a prompt).",
    ),
]


def key_files(settings: Settings) -> dict[str, Path]:
    """The key files a deployment cannot do without, by the name they have in a backup (and in
    a restored data directory's audit/ folder)."""
    return {
        "signing.key": key_path(settings),
        "master.key": master_key_path(settings),
        "pseudonym.key": pseudonym_key_path(settings),
        "pseudonym.retired": settings.data_dir / "audit" / "pseudonym.retired",
    }


def _passphrase(given: Path | None, confirm: bool) -> bytes:
    """From the file, the variable or a prompt; never from the command line, where other users
    of the machine could read it in the process list."""
    if given is not None:
        try:
            text = given.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise fail(f"cannot read --passphrase-file {given}: {reason}", EXIT_USAGE) from None
    elif os.environ.get(PASSPHRASE_ENV):
        text = os.environ[PASSPHRASE_ENV]
    elif sys.stdin.isatty():
        text = typer.prompt("Backup passphrase", hide_input=True, confirmation_prompt=confirm)
    else:
        raise fail(f"no passphrase: give --passphrase-file or set {PASSPHRASE_ENV}", EXIT_USAGE)
    if len(text) < _MIN_PASSPHRASE:
        raise fail(f"the passphrase must have at least {_MIN_PASSPHRASE} characters", EXIT_USAGE)
    return text.encode()


def backup(
    out: Annotated[Path, typer.Option("--out", help="The backup file to write (not overwritten).")],
    passphrase_file: PassphraseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Back up the database (online, consistent) and the key files, encrypted under a
    passphrase, while the service runs."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    if out.exists():
        raise fail(f"{out} exists; sovllm does not overwrite a backup", EXIT_USAGE)
    if not out.parent.is_dir():
        raise fail(f"the folder {out.parent} does not exist", EXIT_USAGE)
    secret = _passphrase(passphrase_file, confirm=True)
    db = open_db(config)
    about = {"sovllm_version": __version__, "schema_revision": current_revision(db)}
    url = database_url(settings.database_url, settings.data_dir)
    try:
        done = create_backup(url, key_files(settings), out, secret, about)
    except BackupError as exc:
        raise fail(str(exc)) from None
    fields = operations.store_backup(
        cli_actor(), str(out.resolve()), done.sha256, done.size, done.backend, done.keys
    )
    append_audit(config, db, records.BACKUP, fields)
    typer.echo(f"backup written to {out} ({done.size} bytes, sha256 {done.sha256})")
    typer.echo(f"holds: the {done.backend} database and keys {', '.join(done.keys)}")


def restore(
    file: Annotated[Path, typer.Argument(help="A file `sovllm backup` wrote.")],
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="The empty data directory to restore into."),
    ] = None,
    database_url_opt: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="PostgreSQL backups: the empty database to restore into (else database_url).",
        ),
    ] = None,
    passphrase_file: PassphraseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Restore a backup into an empty data directory (and an empty PostgreSQL database)."""
    try:
        settings = load_settings(config, data_dir=data_dir, database_url=database_url_opt)
        url = database_url(settings.database_url, settings.data_dir)
    except (ConfigError, DatabaseConfigError) as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    target = settings.data_dir
    try:
        with file.open("rb") as fh:
            kind = read_header(fh)[1].get("database")
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror}", EXIT_USAGE) from None
    except BackupFileError as exc:
        raise fail(f"{file}: {exc}") from None
    backend = backend_of(url)
    if kind != backend:
        hint = " (give --database-url of an empty database)" if kind == "postgresql" else ""
        raise fail(f"{file} holds a {kind} database, the target is {backend}{hint}", EXIT_USAGE)
    try:
        empty_folder(target)
        if backend == "postgresql":
            empty_database(url)
    except BackupError as exc:
        raise fail(str(exc)) from None
    secret = _passphrase(passphrase_file, confirm=False)
    created = not target.exists()
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=target))
    try:
        with file.open("rb") as fh:
            unpacked = unpack(fh, secret, staging)
        _write_keys(target, unpacked.keys)
        restore_database(unpacked, url)
    except (WrongPassphrase, BackupFileError, BackupError) as exc:
        _empty(target, created)
        raise fail(f"{file}: {exc}" if isinstance(exc, BackupFileError) else str(exc)) from None
    except BaseException:
        _empty(target, created)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _record_restore(settings, url, file, unpacked.manifest, sorted(unpacked.keys))


def _write_keys(target: Path, keys: dict[str, bytes]) -> None:
    allowed = {"signing.key", "master.key", "pseudonym.key", "pseudonym.retired"}
    folder = target / "audit"
    folder.mkdir(mode=0o700, exist_ok=True)
    for name, data in keys.items():
        if name not in allowed:
            raise BackupError(f"the backup holds an unknown key file {name!r}")
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def _empty(folder: Path, created: bool) -> None:
    """Undo a failed restore: the folder was empty (or absent) before it began."""
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    if created:
        folder.rmdir()


def _record_restore(
    settings: Settings, url: str, file: Path, manifest: dict[str, Any], keys: list[str]
) -> None:
    """Migrate the restored database, write the `store.restore` entry with the restored keys,
    and verify the log; the restored key files are used whatever the settings name."""
    restored = settings.model_copy(
        update={
            "database_url": url,
            "audit": settings.audit.model_copy(update={"key_file": None}),
            "privacy": settings.privacy.model_copy(
                update={"master_key_file": None, "pseudonym_key_file": None}
            ),
        }
    )
    db = Database(url)
    try:
        upgrade(db)
        log = open_audit(restored, db)
    except (PseudonymKeyError, MasterKeyError) as exc:
        raise fail(f"the restored keys do not match the restored database: {exc}") from None
    digest = hashlib.sha256()
    with file.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    fields = operations.store_restore(
        cli_actor(),
        str(file.resolve()),
        digest.hexdigest(),
        str(manifest.get("created_at")),
        str(manifest.get("database", {}).get("backend")),
        keys,
    )
    log.append(records.RESTORE, fields).result(timeout=30)
    log.close()
    report = verify_database(db, log.signer.verifier)
    db.dispose()
    typer.echo(f"restored into {settings.data_dir}: the database and keys {', '.join(keys)}")
    typer.echo(f"audit log: {report.summary()}")
    named = [
        name
        for name, value in (
            ("audit.key_file", settings.audit.key_file),
            ("privacy.master_key_file", settings.privacy.master_key_file),
            ("privacy.pseudonym_key_file", settings.privacy.pseudonym_key_file),
        )
        if value is not None
    ]
    if named:
        typer.echo(
            f"note: the settings name key files elsewhere ({', '.join(named)}): the restored "
            f"keys are in {settings.data_dir / 'audit'}; point those settings at them"
        )
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)
