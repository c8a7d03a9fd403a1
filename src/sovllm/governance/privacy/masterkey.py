"""The master key that wraps every data subject's key, and its rotation.

Each wrapped key records the id of the master that wraps it (`subject_keys.master_id`, a
fingerprint that reveals nothing of the key), so several masters can be in use at once while a
rotation runs, and a rotation that was interrupted resumes where it stopped.

Rotation of the default key file (data_dir/audit/master.key), in three steps each safe to
repeat:

1. the new key is written to `master.key.next` (0600); a resumed run reuses it;
2. in one transaction, every subject key not yet under the new master is re-wrapped under it
   (erased subjects, whose wrapped key is NULL, are left as they are);
3. `master.key.next` replaces `master.key` (an atomic rename): the old key is gone.

A running server learns of the new key without a restart: a vault wraps new subject keys under
`master.key.next` while it exists, and reloads the files when it meets an id it does not know.
New subject keys and the re-wrap are serialized (SQLite's write lock; on PostgreSQL an advisory
lock the re-wrap takes exclusively and a vault creating a key takes shared), so none is left
under the old key when step 3 removes it. A vault whose master a rotation has left behind (a
mounted key, servers left running) refuses to wrap new subject keys (content.py).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import or_, select, text, update
from sqlalchemy.orm import Session

from sovllm.store.db import Database
from sovllm.store.schema import SubjectKey

_LOCK_KEY = 7263544
"""PostgreSQL advisory lock between the re-wrap (exclusive) and new subject keys (shared)."""
NEXT_SUFFIX = ".next"


class MasterKeyError(Exception):
    """A master key is missing, malformed, or not the one a subject key is wrapped under."""


def key_id(key: bytes) -> str:
    """A master key's id: 16 hex digits of a hash of it, safe to store and to log."""
    return hashlib.sha256(b"sovllm-master-id\x00" + key).hexdigest()[:16]


def read_key(path: Path) -> bytes:
    """A key file (master or pseudonym key): 32 random bytes, base64."""
    try:
        key = base64.b64decode(path.read_text().strip(), validate=True)
    except (OSError, ValueError) as exc:
        raise MasterKeyError(f"cannot read the key {path}: {exc}") from None
    if len(key) != 32:
        raise MasterKeyError(f"{path} is not a key: it must hold 32 bytes, base64")
    return key


def write_key(path: Path, key: bytes) -> None:
    """Create `path` (0600, never overwritten) holding `key`, durable when this returns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(key).decode() + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def next_path(path: Path) -> Path:
    return path.with_name(path.name + NEXT_SUFFIX)


def swap(side: Path, path: Path) -> None:
    """Replace `path` by `side` atomically, durable when this returns (before the audit entry
    says it happened)."""
    os.replace(side, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def wrap(master: bytes, subject: str, key: bytes) -> str:
    nonce = secrets.token_bytes(12)
    return base64.b64encode(nonce + AESGCM(master).encrypt(nonce, key, subject.encode())).decode()


def unwrap(master: bytes, subject: str, wrapped: str) -> bytes:
    raw = base64.b64decode(wrapped)
    return AESGCM(master).decrypt(raw[:12], raw[12:], subject.encode())


class MasterKeys:
    """The master keys a vault knows, by id.

    `first` is the key the vault was opened with: it wraps rows from before ids were stored.
    With `path` (a key file sovllm manages) the current key is re-read from the files, so a
    rotation run by another process is followed; without it the first key is the only one.
    """

    def __init__(self, first: bytes, path: Path | None = None) -> None:
        self.first = first
        self.path = path
        self._known = {key_id(first): first}

    def current(self) -> tuple[str, bytes]:
        """The master new subject keys are wrapped under: `.next` while a rotation runs."""
        if self.path is None:
            return key_id(self.first), self.first
        for candidate in (next_path(self.path), self.path):
            if candidate.exists():
                try:
                    key = read_key(candidate)
                except MasterKeyError:
                    continue  # renamed away between the check and the read: the next one
                self._known[key_id(key)] = key
                return key_id(key), key
        raise MasterKeyError(f"the master key {self.path} is gone")

    def get(self, master_id: str | None) -> bytes:
        if master_id is None:
            return self.first
        key = self._known.get(master_id)
        if key is None and self.path is not None:  # rotated by another process: reload
            for candidate in (next_path(self.path), self.path):
                if candidate.exists():
                    try:
                        found = read_key(candidate)
                    except MasterKeyError:
                        continue
                    self._known[key_id(found)] = found
            key = self._known.get(master_id)
        if key is None:
            where = self.path or "the configured master key"
            raise MasterKeyError(
                f"a subject key is wrapped under master key {master_id}, which is not {where}"
            )
        return key


def lock_for_new_key(db: Database, s: Session) -> None:
    """Before a vault picks the master for a new subject key (PostgreSQL; SQLite's write lock
    already serializes it with the re-wrap)."""
    if db.backend == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": _LOCK_KEY})


def rewrap(
    db: Database,
    keys: MasterKeys,
    new: bytes,
    on_row: Callable[[int], None] | None = None,
) -> int:
    """Re-wrap, in one transaction, every live subject key not yet under `new`; the count.

    `on_row(n)` runs after the n-th row (a fault seam for tests: raising rolls it all back).
    Each update checks the wrapped key is still the one read, so a subject erased meanwhile
    stays erased.
    """
    new_id = key_id(new)
    done = 0
    with db.transaction() as s:
        if db.backend == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        rows = s.execute(
            select(SubjectKey.subject, SubjectKey.wrapped_key, SubjectKey.master_id)
            .where(
                SubjectKey.wrapped_key.is_not(None),
                or_(SubjectKey.master_id.is_(None), SubjectKey.master_id != new_id),
            )
            .order_by(SubjectKey.subject)
        ).all()
        for subject, wrapped, master_id in rows:
            assert wrapped is not None  # selected so
            try:
                key = unwrap(keys.get(master_id), subject, wrapped)
            except InvalidTag:
                raise MasterKeyError(
                    f"the key of subject {subject} does not open under master key "
                    f"{master_id or key_id(keys.first)}"
                ) from None
            changed = s.execute(
                update(SubjectKey)
                .where(SubjectKey.subject == subject, SubjectKey.wrapped_key == wrapped)
                .values(wrapped_key=wrap(new, subject, key), master_id=new_id)
            )
            done += int(changed.rowcount or 0)  # type: ignore[attr-defined]
            if on_row is not None:
                on_row(done)
    return done


@dataclass(frozen=True)
class Rotated:
    old_id: str
    new_id: str
    rewrapped: int
    resumed: bool
    """A side file `master.key.next` from an interrupted run was found and used."""
    key_file: Path
    """Where the new key is now."""


def rotate(
    db: Database,
    path: Path,
    new_key_file: Path | None = None,
    on_row: Callable[[int], None] | None = None,
    before_swap: Callable[[Rotated], None] | None = None,
) -> Rotated:
    """Rotate the master key in `path` (see the module doc); with `new_key_file`, re-wrap under
    that key and write no file (the key file is a mounted secret: its owner swaps it).

    `before_swap` runs after the re-wrap and before step 3 (the CLI writes the audit entry
    there): interrupted after it, a rerun resumes and records it again, so a completed rotation
    always has its entry."""
    old = read_key(path)
    side = next_path(path)
    if new_key_file is not None:
        new, resumed = read_key(new_key_file), False
    elif side.exists():
        new, resumed = read_key(side), True
    else:
        new, resumed = secrets.token_bytes(32), False
        write_key(side, new)
    if key_id(new) == key_id(old) and not resumed:
        raise MasterKeyError("the new master key is the current one")
    keys = MasterKeys(old, None if new_key_file is not None else path)
    keys._known[key_id(new)] = new
    count = rewrap(db, keys, new, on_row)
    done = Rotated(key_id(old), key_id(new), count, resumed, new_key_file or path)
    if before_swap is not None:
        before_swap(done)
    if new_key_file is None:
        swap(side, path)
    return done
