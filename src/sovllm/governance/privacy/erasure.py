"""Erasure of a data subject (GDPR Art. 17): crypto-shred their content, sign a receipt."""

from __future__ import annotations

import base64
import time
from typing import Any

from sovllm.governance.audit import keyed_hash, keyed_hashes
from sovllm.governance.audit.log import AuditLog, canonical, utc
from sovllm.governance.privacy.content import ContentVault

RECEIPT_SCHEMA = "sovllm-erasure-receipt/1"


def subject_for(audit: AuditLog, user: str | None, key_id: str) -> str:
    """Whose content this is: the pseudonym of the request's `user`, else the API key."""
    if user:
        return "user:" + keyed_hash(audit, "user", user.encode())[:40]
    return "key:" + key_id


def erase(
    vault: ContentVault, audit: AuditLog, subject: str, actor: dict[str, str]
) -> dict[str, Any]:
    """Destroy the subject's key, record it in the audit log, return a signed receipt.

    `subject` is what the subject is known by: a `user` value sent with requests, or
    `key:<key id>`.
    """
    sid = subject if subject.startswith("key:") else subject_for(audit, subject, "")
    erased = vault.erase(sid)
    records = erased.content_records
    if not subject.startswith("key:"):  # their content under earlier pseudonym epochs too
        for digest in keyed_hashes(audit, "user", subject.encode())[1:]:
            records += vault.erase("user:" + digest[:40]).content_records
    seq = audit.append(
        "privacy.erase",
        {"actor": actor, "subject": sid, "content_records": records,
         "old_key_bytes": erased.old_key_bytes},
    ).result(timeout=30)  # fmt: skip
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
    signature = audit.signer.sign_bytes(canonical(receipt))
    return {**receipt, "signature": base64.b64encode(signature).decode(),
            "verifier_key": audit.signer.verifier.encode()}  # fmt: skip
