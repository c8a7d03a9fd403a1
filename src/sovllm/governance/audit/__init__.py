"""The tamper-evident audit log (RFC 6962 Merkle tree, C2SP signed checkpoints)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

from sovllm.config import ConfigError, Settings
from sovllm.governance.audit import records
from sovllm.governance.audit.checkpoint import Signer
from sovllm.governance.audit.head import Head, file_for
from sovllm.governance.audit.log import (
    KEY_KIND,
    PSEUDONYM_KEY_KIND,
    PSEUDONYM_ROTATED_KIND,
    AuditLog,
)
from sovllm.governance.privacy.masterkey import (
    MasterKeyError,
    key_id,
    next_path,
    read_key,
    write_key,
)
from sovllm.store.db import Database
from sovllm.store.raw import SQL, raw_transaction

_REREAD_S = 1.0


def key_path(settings: Settings) -> Path:
    return settings.audit.key_file or settings.data_dir / "audit" / "signing.key"


def open_signer(settings: Settings) -> Signer:
    """The configured key file is only read (load_settings checked it is there); the default
    one is made at first start."""
    if settings.audit.key_file is not None:
        return Signer.load(settings.audit.key_file, settings.audit.origin)
    return Signer.load_or_create(key_path(settings), settings.audit.origin)


def pseudonym_key_path(settings: Settings) -> Path:
    return settings.privacy.pseudonym_key_file or settings.data_dir / "audit" / "pseudonym.key"


class PseudonymKeyError(ConfigError):
    """The pseudonym key file is missing or not the key the audit log records: starting would
    give the same users other pseudonyms than the other gateways (and erasure would miss)."""


_NEWEST_PSEUDONYM_KEY = SQL(
    "SELECT body FROM audit_entries WHERE kind IN (:created, :rotated) AND body IS NOT NULL "
    "ORDER BY seq DESC LIMIT 1"
)
_ANY_ENTRY = SQL("SELECT seq FROM audit_entries LIMIT 1")
_ANY_OF_KIND = SQL("SELECT seq FROM audit_entries WHERE kind IN (:a, :b) LIMIT 1")


def recorded_pseudonym_key(db: Database) -> str | None:
    """The id of the pseudonym key the log last recorded (created or rotated to), if any."""
    with raw_transaction(db) as tx:
        row = tx.one(
            _NEWEST_PSEUDONYM_KEY,
            {"created": PSEUDONYM_KEY_KIND, "rotated": PSEUDONYM_ROTATED_KIND},
        )
    return None if row is None else str(json.loads(row[0])["key_id"])


def _first_key(db: Database, signer: Signer, path: Path) -> bytes:
    """The key a missing default pseudonym key file is made with.

    A fresh log gets a random key. A legacy log (entries, but no pseudonym key recorded and no
    signing-key transition) keeps its pseudonyms: they were made under a hash of the signing key,
    which is still the one they were made under. Anything else would silently change every
    pseudonym, so it is refused.
    """
    with raw_transaction(db) as tx:
        fresh = tx.one(_ANY_ENTRY, {}) is None
        recorded = tx.one(_ANY_OF_KIND, {"a": PSEUDONYM_KEY_KIND, "b": PSEUDONYM_ROTATED_KIND})
        rotated = tx.one(_ANY_OF_KIND, {"a": KEY_KIND, "b": KEY_KIND})
    if fresh:
        return os.urandom(32)
    if recorded is None and rotated is None:
        return signer.secret
    raise PseudonymKeyError(
        f"the pseudonym key {path} is missing, but the audit log holds pseudonyms made under "
        "another key: restore the file from a backup of the data folder (or set "
        "privacy.pseudonym_key_file to it); a new key would give every user other pseudonyms"
    )


def _create(path: Path, key: bytes) -> None:
    """Make `path` holding `key` atomically: a complete file or none (a gateway starting at the
    same instant reads the winner's key, never an empty file)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    write_key(tmp, key)
    try:
        with contextlib.suppress(FileExistsError):  # another process made it first
            os.link(tmp, path)
    finally:
        tmp.unlink()


def open_pseudonym_key(settings: Settings, log: AuditLog) -> bytes:
    """The pseudonyms' HMAC key: the configured file (only read), else the default one, made at
    first start (_first_key). Its id is recorded in the log when first used; a key file whose
    id is not the newest recorded one is refused (PseudonymKeyError)."""
    path = pseudonym_key_path(settings)
    if settings.privacy.pseudonym_key_file is None and not path.exists():
        try:
            _create(path, _first_key(log.db, log.signer, path))
        except PseudonymKeyError:
            if not path.exists():  # else a gateway starting with this one made and recorded it
                raise
    key = read_key(path)
    recorded = recorded_pseudonym_key(log.db)
    if recorded is None:
        log.append(PSEUDONYM_KEY_KIND, records.pseudonym_key(key_id(key))).result(timeout=30)
    elif recorded != key_id(key):
        side = next_path(path)  # a rotation between its audit entry and its file swap
        if side.exists() and key_id(read_key(side)) == recorded:
            return read_key(side)
        raise PseudonymKeyError(
            f"the pseudonym key {path} (id {key_id(key)}) is not the one the audit log "
            f"records last ({recorded}): put the key with id {recorded} in that file (e.g. "
            "from a backup, or finish the swap of a rotated mounted secret) and start again"
        )
    return key


def open_audit(settings: Settings, db: Database) -> AuditLog:
    signer = open_signer(settings)
    every, seconds = settings.audit.checkpoint_every, settings.audit.checkpoint_seconds
    log = AuditLog(
        db, signer, settings.audit.origin, checkpoint_every=every, checkpoint_seconds=seconds
    )
    log.key_file = key_path(settings)
    url = db.engine.url.render_as_string(hide_password=True)
    log.head = Head(file_for(settings.data_dir / "audit", url))
    log.pseudonym_key = open_pseudonym_key(settings, log)
    log.pseudonym_file = pseudonym_key_path(settings)
    log.pseudonyms_retired = settings.data_dir / "audit" / "pseudonym.retired"
    return log


def current_pseudonym_key(log: AuditLog) -> bytes:
    """The pseudonym key, re-read from its file at most once a second: a rotation by another
    process (or a swapped mounted secret) applies within a second."""
    now = time.monotonic()
    if log.pseudonym_file is not None and now - log.pseudonym_read_at >= _REREAD_S:
        log.pseudonym_read_at = now
        with contextlib.suppress(MasterKeyError):  # renamed this instant: keep the last one
            log.pseudonym_key = read_key(log.pseudonym_file)
    return log.pseudonym_key


def retired_pseudonym_keys(log: AuditLog) -> list[bytes]:
    """Earlier epochs' keys, oldest first (privacy/pseudonyms.py)."""
    path = log.pseudonyms_retired
    if path is None or not path.exists():
        return []
    return [base64.b64decode(line) for line in path.read_text().split()]


def _hmac(key: bytes, purpose: str, data: bytes) -> str:
    derived = hmac.new(key, purpose.encode(), hashlib.sha256).digest()
    return hmac.new(derived, data, hashlib.sha256).hexdigest()


def keyed_hash(log: AuditLog, purpose: str, data: bytes) -> str:
    """HMAC-SHA256 under a key derived from the pseudonym key: a pseudonym, not a plain hash.

    A plain hash of a short user id or prompt could be reversed by guessing; without the
    server's secret this cannot.
    """
    return _hmac(current_pseudonym_key(log), purpose, data)


def keyed_hashes_under(keys: list[bytes], purpose: str, data: bytes) -> list[str]:
    """keyed_hash under each of `keys` (earlier epochs' keys, for erasure)."""
    return [_hmac(key, purpose, data) for key in keys]
