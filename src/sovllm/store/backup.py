"""Backup and restore of a deployment: the database, snapshotted while it serves, and the key
files, in one encrypted file (store/backup_file.py).

The plaintext is a gzipped tar: `manifest.json` first, then `database.sqlite` (SQLite's online
backup API: one read transaction, a consistent copy while writers go on in the WAL) or
`database.pgdump` (`pg_dump --format=custom`, which reads one snapshot), then `keys/NAME` for
each key file. The key files are read before and after the database snapshot; a rotation that
changed one meanwhile makes the backup start again, so keys and database always match.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from sovllm.store.backup_file import BackupFileError, DecryptingReader, EncryptingWriter

MANIFEST = "manifest.json"
SQLITE_MEMBER = "database.sqlite"
PGDUMP_MEMBER = "database.pgdump"
KEY_DIR = "keys/"
_ATTEMPTS = 3


class BackupError(Exception):
    """The backup or restore cannot be done; the message says why, in one line."""


@dataclass(frozen=True)
class BackupDone:
    path: Path
    sha256: str
    size: int
    backend: str
    keys: list[str]


def backend_of(url: str) -> str:
    return make_url(url).get_backend_name()


# -- PostgreSQL's client programs ------------------------------------------------------------


def pg_program(name: str) -> str:
    """pg_dump or pg_restore: the newest installed major version (it must not be older than the
    server's), else the one on PATH."""
    found = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if found:
        return str(found[-1])
    on_path = shutil.which(name)
    if on_path is None:
        raise BackupError(f"{name} is not installed (it comes with PostgreSQL's client package)")
    return on_path


def _pg_env(url: URL) -> dict[str, str]:
    """libpq's connection settings as variables: a password never appears in a command line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    parts = {
        "PGHOST": url.host,
        "PGPORT": str(url.port) if url.port else None,
        "PGUSER": url.username,
        "PGPASSWORD": url.password,
        "PGDATABASE": url.database,
        "PGSSLMODE": url.query.get("sslmode"),
    }
    env.update({k: str(v) for k, v in parts.items() if v})
    return env


def _run_pg(argv: list[str], url: URL) -> None:
    done = subprocess.run(argv, env=_pg_env(url), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        reason = lines[0] if lines else f"exit status {done.returncode}"
        raise BackupError(f"{Path(argv[0]).name} failed: {reason}")


# -- backup ----------------------------------------------------------------------------------


def _read_keys(keys: Mapping[str, Path]) -> dict[str, bytes]:
    found = {}
    for name, path in keys.items():
        try:
            found[name] = path.read_bytes()
        except FileNotFoundError:
            continue  # e.g. no pseudonym.retired before the first pseudonym rotation
        except OSError as exc:
            raise BackupError(f"cannot read the key file {path}: {exc.strerror}") from None
    return found


def _snapshot(url: str, into: Path) -> None:
    if backend_of(url) == "sqlite":
        source_path = make_url(url).database
        if not source_path or not Path(source_path).exists():
            raise BackupError(f"the SQLite database {source_path} does not exist")
        source = sqlite3.connect(source_path, timeout=30)
        target = sqlite3.connect(into)
        try:
            source.execute("PRAGMA busy_timeout=30000")
            source.backup(target)  # all pages in one step: one read transaction
        except sqlite3.Error as exc:
            raise BackupError(f"SQLite backup failed: {exc}") from None
        finally:
            target.close()
            source.close()
        return
    argv = [pg_program("pg_dump"), "--format=custom", "--no-owner", "--no-privileges"]
    _run_pg([*argv, f"--file={into}"], make_url(url))


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(dt.datetime.now(dt.UTC).timestamp())
    tar.addfile(info, io.BytesIO(data))


def create_backup(
    url: str,
    keys: Mapping[str, Path],
    out: Path,
    passphrase: bytes,
    about: Mapping[str, Any],
) -> BackupDone:
    """Write the backup of the database at `url` and the `keys` (name -> file) to `out`.

    `about` goes into the manifest as it is (the sovllm version, the schema revision...). The
    file appears only when complete (a temporary name, then a rename)."""
    backend = backend_of(url)
    if backend not in ("sqlite", "postgresql"):
        raise BackupError(f"cannot back up a {backend} database")
    if out.exists():
        raise BackupError(f"{out} exists; sovllm does not overwrite a backup")
    work = Path(tempfile.mkdtemp(prefix=".sovllm-backup-", dir=out.parent))
    try:
        snapshot = work / "snapshot"
        for _ in range(_ATTEMPTS):
            before = _read_keys(keys)
            snapshot.unlink(missing_ok=True)
            _snapshot(url, snapshot)
            after = _read_keys(keys)
            if before == after:
                break
        else:
            raise BackupError("the key files kept changing during the backup (a rotation?)")
        member = SQLITE_MEMBER if backend == "sqlite" else PGDUMP_MEMBER
        manifest = {
            "format": 1,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "database": {"backend": backend, "member": member},
            "keys": sorted(after),
            **about,
        }
        partial = work / "backup"
        with partial.open("wb") as fh:
            sink = EncryptingWriter(fh, passphrase, backend)
            # zlib's default level: tarfile's "w|gz" takes 9, about twice as slow for 2% less.
            with (
                gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=6, mtime=0) as packed,
                tarfile.open(fileobj=packed, mode="w|") as tar,
            ):
                _add(tar, MANIFEST, json.dumps(manifest, indent=2).encode())
                tar.add(snapshot, arcname=member)
                for name, data in sorted(after.items()):
                    _add(tar, KEY_DIR + name, data)
            sink.close()
            fh.flush()
            os.fsync(fh.fileno())
        digest = hashlib.sha256()
        with partial.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        size = partial.stat().st_size
        os.link(partial, out)  # never over a file that appeared meanwhile
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BackupDone(out, digest.hexdigest(), size, backend, sorted(after))


# -- restore ---------------------------------------------------------------------------------


def empty_database(url: str) -> None:
    """Refuse a PostgreSQL database that holds any table (BackupError)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            count = conn.execute(
                text(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
                )
            ).scalar_one()
    except SQLAlchemyError as exc:
        raise BackupError(f"cannot open the target database: {exc.__class__.__name__}") from None
    finally:
        engine.dispose()
    if count:
        raise BackupError(
            f"the target database holds {count} table(s): restore only into an empty database"
        )


def empty_folder(folder: Path) -> None:
    """Refuse a data directory that exists and holds anything (BackupError)."""
    if folder.exists() and not folder.is_dir():
        raise BackupError(f"{folder} is not a directory")
    if folder.exists() and any(folder.iterdir()):
        first = sorted(p.name for p in folder.iterdir())[0]
        raise BackupError(
            f"{folder} is not empty (it holds {first!r}): restore only into an empty data directory"
        )


@dataclass(frozen=True)
class Restored:
    manifest: dict[str, Any]
    keys: dict[str, bytes]
    database_file: Path
    """The SQLite file or the pg_dump archive, in the staging folder."""


def unpack(src: IO[bytes], passphrase: bytes, staging: Path) -> Restored:
    """Decrypt and unpack a backup into `staging`; every chunk is authenticated before this
    returns (WrongPassphrase, BackupFileError)."""
    reader = DecryptingReader(src, passphrase)
    manifest: dict[str, Any] | None = None
    keys: dict[str, bytes] = {}
    database: Path | None = None
    try:
        with tarfile.open(fileobj=reader, mode="r|gz") as tar:  # type: ignore[call-overload]
            for member in tar:
                data = tar.extractfile(member) if member.isfile() else None
                if data is None:
                    continue
                if member.name == MANIFEST:
                    manifest = json.loads(data.read())
                elif member.name in (SQLITE_MEMBER, PGDUMP_MEMBER):
                    database = staging / member.name
                    with database.open("wb") as fh:
                        shutil.copyfileobj(data, fh, 1 << 20)
                elif member.name.startswith(KEY_DIR) and "/" not in member.name[len(KEY_DIR) :]:
                    keys[member.name[len(KEY_DIR) :]] = data.read()
        reader.drain()
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error, ValueError) as exc:
        # Only a writer with the passphrase could make an authenticated but malformed archive.
        raise BackupFileError(f"the backup file is damaged: {exc.__class__.__name__}") from None
    if manifest is None or database is None:
        raise BackupFileError("the backup file is damaged: no manifest or no database in it")
    return Restored(manifest, keys, database)


def restore_database(restored: Restored, url: str) -> None:
    """Put the unpacked database in place: the SQLite file at `url`'s path, or pg_restore into
    the (empty) PostgreSQL database at `url`."""
    backend = str(restored.manifest["database"]["backend"])
    if backend_of(url) != backend:
        raise BackupError(f"this backup holds a {backend} database, not a {backend_of(url)} one")
    if backend == "sqlite":
        target = Path(str(make_url(url).database))
        target.parent.mkdir(parents=True, exist_ok=True)
        check = sqlite3.connect(restored.database_file)
        try:
            result = check.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            check.close()
        if result != "ok":
            raise BackupError(f"the database in the backup is damaged: {result}")
        shutil.move(restored.database_file, target)
        return
    argv = [pg_program("pg_restore"), "--no-owner", "--no-privileges", "--single-transaction"]
    argv += ["--exit-on-error", f"--dbname={make_url(url).database}"]
    _run_pg([*argv, str(restored.database_file)], make_url(url))
