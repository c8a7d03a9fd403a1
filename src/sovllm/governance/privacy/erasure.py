"""Erasure of a data subject (GDPR Art. 17): crypto-shred their content, sign a receipt."""

from __future__ import annotations

import base64
import time
from typing import Any

from sqlalchemy import text

from sovllm.governance.audit import keyed_hash, keyed_hashes_under, retired_pseudonym_keys
from sovllm.governance.audit import records as entries
from sovllm.governance.audit.log import PSEUDONYM_ROTATED_KIND, AuditLog, canonical, utc
from sovllm.governance.privacy.content import ContentVault
from sovllm.governance.privacy.masterkey import key_id
from sovllm.store.raw import SQL, raw_transaction

RECEIPT_SCHEMA = "sovllm-erasure-receipt/1"


def subject_for(audit: AuditLog, user: str | None, key_id: str) -> str:
    """Whose content this is: the pseudonym of the request's `user`, else the API key."""
    if user:
        return "user:" + keyed_hash(audit, "user", user.encode())[:40]
    return "key:" + key_id


class ErasureError(Exception):
    """Erasure cannot reach everything it must; nothing was erased. The message says why."""


_ROTATIONS = SQL("SELECT COUNT(*) FROM audit_entries WHERE kind = :kind")


def _earlier_keys(vault: ContentVault, audit: AuditLog) -> list[bytes]:
    """Every earlier pseudonym epoch's key this process reaches: those the database keeps
    (wrapped under the master key) and those in this data folder's `pseudonym.retired`.

    Refuses when the log records more rotations than that (and than retention purged): the
    subject's content under a missing epoch would silently survive the erasure."""
    kept, purged = vault.retired_pseudonym_keys()
    keys = list(dict.fromkeys([*retired_pseudonym_keys(audit), *kept]))
    with raw_transaction(audit.db) as tx:
        row = tx.one(_ROTATIONS, {"kind": PSEUDONYM_ROTATED_KIND})
    rotations = int(row[0]) if row else 0
    reachable = len({key_id(k) for k in keys} | purged)
    if rotations > reachable:
        raise ErasureError(
            f"the audit log records {rotations} pseudonym key rotation(s) but only {reachable} "
            f"earlier key(s) are in the database or in {audit.pseudonyms_retired}: the "
            "subject's content under the other epochs would survive; run the erasure where the "
            "rotation ran (or copy its pseudonym.retired here, 0600). Nothing was erased"
        )
    return keys


_KEY_EXISTS = text("SELECT 1 FROM api_keys WHERE id = :id")


def _check_subject(audit: AuditLog, subject: str) -> None:
    """A blank subject (an empty shell variable) or a key id that never existed would get a
    signed receipt that erased nobody: refused, naming it."""
    if not subject.strip() or (subject.startswith("key:") and not subject[4:].strip()):
        raise ErasureError(
            "the subject is empty: give the `user` value its requests carried, or key:<key id>"
        )
    if subject.startswith("key:"):
        with audit.db.read() as s:  # a plain read: no write lock for a check
            found = s.execute(_KEY_EXISTS, {"id": subject[4:]}).first()
        if found is None:
            raise ErasureError(f"no API key has the id {subject[4:]!r} (`sovllm keys list`)")


def erase(
    vault: ContentVault, audit: AuditLog, subject: str, actor: dict[str, str]
) -> dict[str, Any]:
    """Destroy the subject's key, record it in the audit log, return a signed receipt.

    `subject` is what the subject is known by: a `user` value sent with requests, or
    `key:<key id>`.
    """
    _check_subject(audit, subject)
    audit.current_signer()  # cannot sign the receipt (a rotated key unreadable): erase nothing
    earlier = [] if subject.startswith("key:") else _earlier_keys(vault, audit)
    sid = subject if subject.startswith("key:") else subject_for(audit, subject, "")
    erased = vault.erase(sid)
    records = erased.content_records
    if not subject.startswith("key:"):  # their content under earlier pseudonym epochs too
        for digest in keyed_hashes_under(earlier, "user", subject.encode()):
            records += vault.erase("user:" + digest[:40]).content_records
    seq = audit.append(
        entries.ERASE, entries.privacy_erase(actor, sid, records, erased.old_key_bytes)
    ).result(timeout=30)
    receipt = {
        "schema": RECEIPT_SCHEMA,
        "log": audit.origin,
        "subject": sid,
        "erased_at": utc(time.time()),
        "content_records_made_unreadable": records,
        "old_key_bytes": erased.old_key_bytes,
        "audit_entry": seq,
        "note": "the subject's content key was destroyed; the audit log keeps only keyed "
        "hashes and still verifies",
    }
    signer = audit.current_signer()  # never a key retired by another process's rotation
    signature = signer.sign_bytes(canonical(receipt))
    return {
        **receipt,
        "signature": base64.b64encode(signature).decode(),
        "verifier_key": signer.verifier.encode(),
    }
