"""The tamper-evident audit log (RFC 6962 Merkle tree, C2SP signed checkpoints)."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from sovllm.config import Settings
from sovllm.governance.audit.checkpoint import Signer
from sovllm.governance.audit.log import AuditLog
from sovllm.store.db import Database


def key_path(settings: Settings) -> Path:
    return settings.audit.key_file or settings.data_dir / "audit" / "signing.key"


def open_signer(settings: Settings) -> Signer:
    """The configured key file is only read (load_settings checked it is there); the default
    one is made at first start."""
    if settings.audit.key_file is not None:
        return Signer.load(settings.audit.key_file, settings.audit.origin)
    return Signer.load_or_create(key_path(settings), settings.audit.origin)


def open_audit(settings: Settings, db: Database) -> AuditLog:
    signer = open_signer(settings)
    return AuditLog(
        db, signer, settings.audit.origin,
        settings.audit.checkpoint_every, settings.audit.checkpoint_seconds,
    )  # fmt: skip


def keyed_hash(log: AuditLog, purpose: str, data: bytes) -> str:
    """HMAC-SHA256 under a key derived from the log's secret: a pseudonym, not a plain hash.

    A plain hash of a short user id or prompt could be reversed by guessing; without the
    server's secret this cannot.
    """
    key = hmac.new(log.signer.secret, purpose.encode(), hashlib.sha256).digest()
    return hmac.new(key, data, hashlib.sha256).hexdigest()
