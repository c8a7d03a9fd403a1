"""The model allow-list: which weights (by SHA-256) this service may load or route to, who
approved them, when, from where and under which licence.

Each row is signed with the audit log's key (the key that signs its checkpoints) over all its
other columns, and each approval or revocation is an audit entry carrying that signature first.
A row is trusted when its signature verifies under a key of the log's chain AND it is the row
the log's newest entry for its hash names: so an edited row, a row inserted without an entry,
an old signed row put back after a revocation, and a deleted row are all detected.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sovllm.engines.weights import Weights
from sovllm.governance.audit import records
from sovllm.governance.audit.checkpoint import CheckpointError, Verifier
from sovllm.governance.audit.log import KEY_KIND, AuditLog, canonical
from sovllm.governance.provenance import entries
from sovllm.store.raw import SQL, raw_transaction

SCHEMA = "sovllm-model-approval/1"
_COLUMNS = (
    "sha256, kind, name, source, licence, files, approved_by, approved_at, revoked_by, "
    "revoked_at, signature, verifier_key"
)
_ALL = SQL(f"SELECT {_COLUMNS} FROM model_allowlist ORDER BY approved_at, sha256")
_ONE = SQL(f"SELECT {_COLUMNS} FROM model_allowlist WHERE sha256 = :sha256")
_DELETE = SQL("DELETE FROM model_allowlist WHERE sha256 = :sha256")
_INSERT = SQL(
    f"INSERT INTO model_allowlist ({_COLUMNS}) VALUES (:sha256, :kind, :name, :source, "
    ":licence, :files, :approved_by, :approved_at, :revoked_by, :revoked_at, :signature, "
    ":verifier_key)"
)
_ENTRIES = SQL(
    "SELECT seq, body FROM audit_entries WHERE kind IN (:approve, :revoke) AND body IS NOT NULL "
    "ORDER BY seq"
)
_KEYS = SQL("SELECT body FROM audit_entries WHERE kind = :kind AND body IS NOT NULL")


class AllowListError(Exception):
    """An approval or revocation cannot be made; the message says why."""


@dataclass(frozen=True)
class Approval:
    sha256: str
    kind: str
    name: str
    source: str
    licence: str
    files: dict[str, str]
    approved_by: dict[str, Any]
    approved_at: float
    revoked_by: dict[str, Any] | None = None
    revoked_at: float | None = None
    signature: str = ""
    verifier_key: str = ""

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def payload(self, origin: str) -> bytes:
        """The bytes the signature covers: every column but the signature and its key."""
        return canonical(
            {
                "schema": SCHEMA,
                "log": origin,
                "sha256": self.sha256,
                "kind": self.kind,
                "name": self.name,
                "source": self.source,
                "licence": self.licence,
                "files": self.files,
                "approved_by": self.approved_by,
                "approved_at": self.approved_at,
                "revoked_by": self.revoked_by,
                "revoked_at": self.revoked_at,
            }
        )


@dataclass(frozen=True)
class Verified:
    approval: Approval
    problem: str | None
    """Why this row cannot be trusted (None: it verifies)."""


@dataclass(frozen=True)
class Listing:
    rows: list[Verified]
    missing: list[str]
    """Hashes the log says are on the list (approved, not revoked since) with no row."""

    @property
    def ok(self) -> bool:
        return not self.missing and all(v.problem is None for v in self.rows)


def _row(r: Any) -> Approval:
    return Approval(
        sha256=str(r[0]),
        kind=str(r[1]),
        name=str(r[2]),
        source=str(r[3]),
        licence=str(r[4]),
        files=json.loads(r[5]),
        approved_by=json.loads(r[6]),
        approved_at=float(r[7]),
        revoked_by=json.loads(r[8]) if r[8] is not None else None,
        revoked_at=float(r[9]) if r[9] is not None else None,
        signature=str(r[10]),
        verifier_key=str(r[11]),
    )


def _signed(log: AuditLog, a: Approval) -> Approval:
    signer = log.current_signer()  # never a key another process's rotation retired
    signature = base64.b64encode(signer.sign_bytes(a.payload(log.origin))).decode()
    return replace(a, signature=signature, verifier_key=signer.verifier.encode())


def _save(log: AuditLog, a: Approval, kind: str, entry: dict[str, Any]) -> None:
    """The audit entry and the row in one transaction: neither exists without the other."""
    with raw_transaction(log.db) as tx:
        log.append_in(tx, kind, entry)
        tx.run(_DELETE, {"sha256": a.sha256})
        tx.run(
            _INSERT,
            {
                "sha256": a.sha256,
                "kind": a.kind,
                "name": a.name,
                "source": a.source,
                "licence": a.licence,
                "files": json.dumps(a.files, sort_keys=True),
                "approved_by": json.dumps(a.approved_by, sort_keys=True),
                "approved_at": a.approved_at,
                "revoked_by": json.dumps(a.revoked_by) if a.revoked_by is not None else None,
                "revoked_at": a.revoked_at,
                "signature": a.signature,
                "verifier_key": a.verifier_key,
            },
        )


def approve(
    log: AuditLog,
    weights: Weights,
    name: str,
    source: str,
    licence: str,
    actor: Mapping[str, object],
    forced: Mapping[str, Any] | None = None,
) -> Approval:
    """Put `weights` on the list (again, after a revocation): the audit entry first, carrying
    the row's signature, and the row, in one transaction. `forced`: the evaluation it was approved despite."""
    for label, value in (("name", name), ("source", source), ("licence", licence)):
        if not value.strip():
            raise AllowListError(f"--{label} must not be empty")
    made = Approval(
        weights.sha256,
        weights.kind,
        name.strip(),
        source.strip(),
        licence.strip(),
        dict(weights.files),
        dict(actor),
        round(time.time(), 6),
    )
    signed = _signed(log, made)
    _save(log, signed, records.MODEL_APPROVE, entries.approve(signed, str(weights.path), forced))
    return signed


def revoke(log: AuditLog, sha256: str, actor: Mapping[str, object]) -> Approval:
    """Take a hash off the list; the row stays, marked revoked and signed again."""
    found = lookup(log, sha256)
    if found is None or not found.approval.active:
        raise AllowListError(f"{sha256} is not on the model allow-list")
    if found.problem is not None:  # signing it again would launder the edit
        raise AllowListError(
            f"{sha256}: {found.problem}; it is refused as it is (approve the weights again to "
            "replace the row)"
        )
    now = round(time.time(), 6)
    revoked = _signed(log, replace(found.approval, revoked_by=dict(actor), revoked_at=now))
    _save(log, revoked, records.MODEL_REVOKE, entries.revoke(revoked))
    return revoked


def trusted_keys(log: AuditLog) -> set[str]:
    """The verifier keys of the log's chain: the current one and every one a transition names."""
    keys = {log.signer.verifier.encode()}
    with raw_transaction(log.db) as tx:
        for (body,) in tx.all(_KEYS, {"kind": KEY_KIND}):
            record = json.loads(body)
            keys.update(str(record[k]) for k in ("old_key", "new_key") if k in record)
    return keys


def _signature_problem(a: Approval, origin: str, trusted: set[str]) -> str | None:
    if a.verifier_key not in trusted:
        return "signed by a key that is not the audit log's: the row was edited"
    try:
        public = Ed25519PublicKey.from_public_bytes(Verifier.decode(a.verifier_key).public)
        public.verify(base64.b64decode(a.signature), a.payload(origin))
    except (InvalidSignature, CheckpointError, ValueError):
        return "its signature does not verify: the row was edited in the database"
    return None


def _newest_entries(log: AuditLog) -> dict[str, dict[str, Any]]:
    """Per hash, the newest approve or revoke entry (its body, with its seq)."""
    newest: dict[str, dict[str, Any]] = {}
    with raw_transaction(log.db) as tx:
        params = {"approve": records.MODEL_APPROVE, "revoke": records.MODEL_REVOKE}
        for seq, body in tx.all(_ENTRIES, params):
            record = json.loads(body)
            newest[str(record.get("sha256"))] = {**record, "seq": int(seq)}
    return newest


def _verify(log: AuditLog, rows: list[Approval]) -> Listing:
    trusted = trusted_keys(log)
    newest = _newest_entries(log)
    checked = []
    for a in rows:
        problem = _signature_problem(a, log.origin, trusted)
        entry = newest.get(a.sha256)
        if problem is None and entry is not None and entry.get("signature") != a.signature:
            problem = (
                f"the audit log's newest entry for it (#{entry['seq']}, {entry.get('kind')}) "
                "records another version of the row: an old row was put back"
            )
        checked.append(Verified(a, problem))
    present = {a.sha256 for a in rows}
    missing = [
        sha
        for sha, e in newest.items()
        if sha not in present and e.get("kind") == records.MODEL_APPROVE
    ]
    return Listing(checked, sorted(missing))


def listing(log: AuditLog) -> Listing:
    """Every row, each verified (signature, key, the log's newest entry), and what is missing."""
    with raw_transaction(log.db) as tx:
        rows = [_row(r) for r in tx.all(_ALL, {})]
    return _verify(log, rows)


def lookup(log: AuditLog, sha256: str) -> Verified | None:
    """The verified row of one hash, or None when it was never approved."""
    with raw_transaction(log.db) as tx:
        row = tx.one(_ONE, {"sha256": sha256})
    if row is None:
        return None
    return _verify(log, [_row(row)]).rows[0]
