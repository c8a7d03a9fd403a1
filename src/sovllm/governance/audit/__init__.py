"""The tamper-evident audit log (RFC 6962 Merkle tree, C2SP signed checkpoints)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import time
from pathlib import Path

from sovllm.config import Settings
from sovllm.governance.audit.checkpoint import Signer
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.privacy.masterkey import MasterKeyError, read_key, write_key
from sovllm.store.db import Database

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


def open_pseudonym_key(settings: Settings, signer: Signer) -> bytes:
    """The pseudonyms' HMAC key: the configured file (only read), else the default one.

    The default file is made at first start from the secret the pseudonyms were derived from
    before it existed (a hash of the signing key), so a data folder keeps its pseudonyms and
    data subjects' ids; from then on it is a key of its own, and rotating the signing key leaves
    it alone.
    """
    if settings.privacy.pseudonym_key_file is not None:
        return read_key(settings.privacy.pseudonym_key_file)
    path = pseudonym_key_path(settings)
    if not path.exists():
        with contextlib.suppress(FileExistsError):  # another process made it first
            write_key(path, signer.secret)
    return read_key(path)


def open_audit(settings: Settings, db: Database) -> AuditLog:
    signer = open_signer(settings)
    log = AuditLog(
        db, signer, settings.audit.origin,
        settings.audit.checkpoint_every, settings.audit.checkpoint_seconds,
    )  # fmt: skip
    log.pseudonym_key = open_pseudonym_key(settings, signer)
    log.pseudonym_file = pseudonym_key_path(settings)
    log.pseudonyms_retired = settings.data_dir / "audit" / "pseudonym.retired"
    log.key_file = key_path(settings)
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


def keyed_hashes(log: AuditLog, purpose: str, data: bytes) -> list[str]:
    """keyed_hash under the current key, then under each earlier epoch's (newest first)."""
    keys = [current_pseudonym_key(log), *reversed(retired_pseudonym_keys(log))]
    return [_hmac(key, purpose, data) for key in keys]
