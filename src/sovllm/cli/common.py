"""What every `sovllm` command shares: the `--config` option, failing, opening the database,
dates, and the audit entries a command-line action writes.

One exit-code convention for every command: 0 done, 1 the operation failed (a refusal, a
check that found something, an I/O error), 2 the input was wrong (a bad flag, setting or
configuration file), as typer itself answers a bad flag.
"""

from __future__ import annotations

import datetime as dt
import getpass
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy.exc import SQLAlchemyError

from sovllm.config import ConfigError, load_settings
from sovllm.governance.audit import records
from sovllm.store.db import Database, DatabaseConfigError, database_url
from sovllm.store.migrate import upgrade

EXIT_FAILED = 1
EXIT_USAGE = 2

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="YAML settings file (or SOVLLM_CONFIG).")
]


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Say what is wrong on stderr; the caller raises what this returns."""
    typer.echo(f"sovllm: {message}", err=True)
    return typer.Exit(code)


def open_db(config: Path | None) -> Database:
    """The service's database, migrated, as the server opens it (a bad setting exits 2)."""
    try:
        settings = load_settings(config)
        db = Database(
            database_url(settings.database_url, settings.data_dir), settings.audit.durability
        )
        upgrade(db)
    except (ConfigError, DatabaseConfigError) as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except OSError as exc:  # data_dir is a file, under one, or cannot be made
        where = exc.filename or "the data folder"
        raise fail(f"cannot use {where} (data_dir): {exc.strerror or exc}", EXIT_USAGE) from None
    except SQLAlchemyError as exc:
        # The driver's own first line says why (refused, unknown host, bad password); it
        # never carries the password itself.
        why = str(getattr(exc, "orig", None) or "").strip().splitlines()
        reason = f": {why[0][:300]}" if why else ""
        raise fail(f"cannot open the database: {exc.__class__.__name__}{reason}") from None
    return db


def parse_date(value: str, flag: str) -> dt.datetime:
    """A date or ISO 8601 time given on the command line; naive means UTC."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a date (YYYY-MM-DD or an ISO 8601 time)", param_hint=flag
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def cli_actor() -> dict[str, str]:
    """Who acted, for the audit log, when it is someone at the command line."""
    return {"cli": getpass.getuser(), "host": socket.gethostname()}


def append_audit(config: Path | None, db: Database, kind: str, fields: dict[str, Any]) -> None:
    """One audit entry from the command line, durable when this returns."""
    from sovllm.governance.audit import open_audit

    try:
        audit = open_audit(load_settings(config), db)
    except ConfigError as exc:  # e.g. a pseudonym key file the log does not record
        raise fail(str(exc), EXIT_USAGE) from None
    audit.append(kind, fields).result()


def audit_writer(config: Path | None, db: Database) -> records.Write:
    """`append_audit` for the governance functions that record their own entries."""
    return lambda kind, fields: append_audit(config, db, kind, fields)


def record_read(
    config: Path | None, db: Database, resource: str, query: dict[str, object], count: int
) -> None:
    """A read from the command line (`access.read`), durable before anything is shown."""
    append_audit(config, db, records.READ, records.access_read(cli_actor(), resource, query, count))
