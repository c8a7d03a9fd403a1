"""The first admin key goes to a private file, never to a log.

A server's output ends up in journald or a log collector, where anyone who reads logs would
find a key that administers everything. So the key is written to a file of mode 0600 (or where
SOVLLM_BOOTSTRAP_KEY_FILE says, e.g. a volume a Kubernetes Secret is made from), and the output
says only where it is and how to read it: `sovllm keys bootstrap --print`, which shows it once
and deletes the file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import func, select, text

from sovllm.governance.identity import KEY_PREFIX, Role, hash_key, new_secret
from sovllm.store.db import Database
from sovllm.store.schema import ApiKey, Tenant

BOOTSTRAP_FILE = "bootstrap-admin.key"
BOOTSTRAP_ENV = "SOVLLM_BOOTSTRAP_KEY_FILE"
READ_COMMAND = "sovllm keys bootstrap --print"


class BootstrapKeyError(Exception):
    """No bootstrap key to read, or it cannot be written or read; the message says which."""


def bootstrap_key_path(data_dir: Path) -> Path:
    """SOVLLM_BOOTSTRAP_KEY_FILE, else data_dir/bootstrap-admin.key."""
    given = os.environ.get(BOOTSTRAP_ENV)
    return Path(given).expanduser() if given else data_dir / BOOTSTRAP_FILE


def write_key(path: Path, key: str) -> None:
    """Write the key to `path`, 0600, replacing a stale one in one step.

    A new name opened with O_EXCL and mode 0600, then renamed over `path`: the key is never in
    a file with looser permissions, not even one left by an earlier start.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):  # it may never have been made
            tmp.unlink()
        raise BootstrapKeyError(
            f"cannot write the bootstrap admin key to {path}: {exc.strerror or exc}"
        ) from None


def bootstrap_admin(
    db: Database, tenant: str = "admin", deliver: Callable[[str], None] | None = None
) -> str | None:
    """On a database with no keys, create the first admin key and return it; else None.

    One transaction (serialised by SQLite's write lock or a PostgreSQL advisory lock), so two
    gateways starting on an empty database make one key between them. `deliver` gets the key
    before the transaction commits: if it raises, no key is created.
    """
    raw = KEY_PREFIX + new_secret()
    now = time.time()
    with db.transaction() as s:
        if db.backend == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(7263542)"))
        if s.scalar(select(func.count()).select_from(ApiKey)):
            return None
        t = s.scalar(select(Tenant).where(Tenant.name == tenant))
        if t is None:
            t = Tenant(name=tenant, created_at=now, weight=1.0)
            s.add(t)
            s.flush()
        s.add(
            ApiKey(
                id="key_" + secrets.token_hex(8),
                tenant_id=t.id,
                role=Role.ADMIN.value,
                key_hash=hash_key(raw),
                prefix=raw[: len(KEY_PREFIX) + 4],
                name="bootstrap",
                created_at=now,
            )
        )
        s.flush()
        if deliver is not None:
            deliver(raw)
    return raw


def create_first_key(db: Database, data_dir: Path) -> Path | None:
    """On a database with no keys, create the first admin key and write it to its file.

    The file is written inside the key's transaction: if it cannot be written the key is not
    created (and the next start tries again), so there is never a key nobody can read.
    Returns the file's path, or None when the database had keys.
    """
    path = bootstrap_key_path(data_dir)
    created = bootstrap_admin(db, deliver=lambda key: write_key(path, key))
    return path if created is not None else None


def announcement(path: Path, config_file: Path | None = None) -> str:
    """What the server prints: where the key is and the command that reads it, not the key."""
    flags = f" --config {config_file}" if config_file is not None else ""
    env = f"{BOOTSTRAP_ENV}={path} " if os.environ.get(BOOTSTRAP_ENV) else ""
    return (
        f"sovllm: created the first admin key (tenant 'admin') in {path} (mode 0600); "
        f"read it once with: {env}{READ_COMMAND}{flags}"
    )


def take_key(data_dir: Path) -> str:
    """Read the bootstrap key and delete its file: it is shown once."""
    path = bootstrap_key_path(data_dir)
    try:
        key = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise BootstrapKeyError(
            f"no bootstrap admin key at {path}: it was read already, or this database had "
            "keys when the server first started (create one with `sovllm keys create --role "
            "admin --tenant admin`)"
        ) from None
    except OSError as exc:
        raise BootstrapKeyError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        path.unlink()
    except OSError as exc:
        raise BootstrapKeyError(
            f"cannot delete {path} after reading it: {exc.strerror or exc}; the key was not shown"
        ) from None
    return key
