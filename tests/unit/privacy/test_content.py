"""Content under a tenant's policy: sealed per subject, erasable, purged; the log still verifies."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import text

from sovllm.governance import tenants
from sovllm.governance.audit.checkpoint import Signer
from sovllm.governance.audit.log import AuditLog, canonical
from sovllm.governance.audit.verify import verify_database
from sovllm.governance.identity import Role
from sovllm.governance.privacy import erasure, pii
from sovllm.governance.privacy.content import ContentVault, NotKept, load_or_create_master
from sovllm.store.db import Database

PII = "Mario Rossi, RSSMRA85T10A562S, IBAN DE89 3704 0044 0532 0130 00"


def vault(db: Database, tmp: Path) -> ContentVault:
    return ContentVault(db, load_or_create_master(tmp / "master.key"))


def test_policies_keep_nothing_masked_or_everything(db: Database, tmp_path: Path) -> None:
    v = vault(db, tmp_path)
    assert not v.store("r0", "user:a", "none", "prompt", PII)
    assert v.store("r1", "user:a", "redacted", "prompt", PII)
    assert v.store("r2", "user:a", "full", "prompt", PII)
    assert v.read("r0") == []
    (masked,) = v.read("r1")
    assert "RSSMRA85T10A562S" not in (masked.text or "") and "[CODICE_FISCALE]" in (
        masked.text or ""
    )
    assert v.read("r2")[0].text == PII
    with db.transaction() as s:
        stored = repr(s.execute(text("SELECT * FROM stored_content")).all())
    assert "Mario" not in stored and "RSSMRA" not in stored  # sealed, not plain


def test_erasure_shreds_one_subject_and_the_log_still_verifies(
    db: Database, tmp_path: Path
) -> None:
    v = vault(db, tmp_path)
    signer = Signer.load_or_create(tmp_path / "signing.key", "t")
    log = AuditLog(db, signer, "t")
    for rid, subject in (("a1", "alice"), ("a2", "alice"), ("b1", "bob")):
        sid = erasure.subject_for(log, subject, "key_x")
        v.store(rid, sid, "full", "prompt", f"secret of {subject}")
        log.append("request.begin", {"subject": sid}, rid).result()
    log.checkpoint()
    receipt = erasure.erase(v, log, "alice", {"cli": "dpo"})
    assert receipt["content_records_made_unreadable"] == 2
    if db.backend == "sqlite":  # the bytes themselves: tests/unit/privacy/test_erase_bytes.py
        assert receipt["old_key_bytes"].startswith("nowhere")
    else:
        assert "VACUUM" in receipt["old_key_bytes"]
    assert [c.text for c in v.read("a1")] == [None]
    assert [c.text for c in v.read("b1")] == ["secret of bob"]
    report = verify_database(db, signer.verifier)
    assert report.ok, report.problems
    # The receipt is signed by the log's key.
    body = {k: w for k, w in receipt.items() if k not in {"signature", "verifier_key"}}
    Ed25519PublicKey.from_public_bytes(signer.verifier.public).verify(
        base64.b64decode(str(receipt["signature"])), canonical(body)
    )
    # New content for an erased subject gets a new key; the old stays unreadable.
    v.store("a3", erasure.subject_for(log, "alice", "key_x"), "full", "prompt", "new")
    assert [c.text for c in v.read("a3")] == ["new"]
    assert [c.text for c in v.read("a2")] == [None]
    with db.transaction() as s:
        kinds = [
            json.loads(b)["kind"] for (b,) in s.execute(text("SELECT body FROM audit_entries"))
        ]
    assert kinds[-1] == "privacy.erase"


def test_purge_removes_only_content_past_retention(db: Database, tmp_path: Path) -> None:
    v = vault(db, tmp_path)
    v.store("old", "user:a", "full", "prompt", "old text")
    v.store("new", "user:a", "full", "prompt", "new text")
    day = 86400.0
    with db.transaction() as s:
        s.execute(
            text("UPDATE stored_content SET created_at = :t WHERE request_id = 'old'"),
            {"t": time.time() - 40 * day},
        )
    assert v.purge(30) == 1
    assert v.read("old") == [] and v.read("new")[0].text == "new text"
    # A simulated clock 31 days on: the rest goes too.
    assert v.purge(30, now=time.time() + 31 * day) == 1


def test_master_key_file_is_private(tmp_path: Path) -> None:
    import os

    path = tmp_path / "a" / "master.key"
    key = load_or_create_master(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_or_create_master(path) == key


def test_redacted_content_whose_masking_fails_is_not_kept(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(text: str) -> list[pii.Finding]:
        raise RuntimeError(f"cannot parse {text}")

    monkeypatch.setattr(pii, "_extra", {})
    pii.register("broken", broken)
    v = vault(db, tmp_path)
    with pytest.raises(NotKept) as err:
        v.store("r1", "user:a", "redacted", "prompt", PII)
    assert "Mario" not in str(err.value) and "'broken' raised RuntimeError" in str(err.value)
    assert v.read("r1") == []  # fail closed: nothing of it stored
    assert v.store("r2", "user:a", "full", "prompt", PII)  # `full` does not mask: kept
    with db.transaction() as s:
        assert s.scalar(text("SELECT count(*) FROM stored_content")) == 1


@pytest.mark.parametrize(
    ("subject", "says"),
    [
        ("", "the subject is empty"),
        ("  ", "the subject is empty"),
        ("key:", "the subject is empty"),
        ("key:key_typo", "no API key has the id 'key_typo'"),
    ],
)
def test_an_erasure_that_would_erase_nobody_is_refused_and_not_recorded(
    db: Database, tmp_path: Path, subject: str, says: str
) -> None:
    """An empty shell variable or a mistyped key id would get a signed receipt for nobody."""
    v = vault(db, tmp_path)
    log = AuditLog(db, Signer.load_or_create(tmp_path / "signing.key", "t"), "t")
    with pytest.raises(erasure.ErasureError, match=says):
        erasure.erase(v, log, subject, {"cli": "dpo"})
    with db.read() as s:
        assert s.execute(text("SELECT count(*) FROM audit_entries")).scalar() == 0
    tenants.create_tenant(db, "ward")
    _, key_info = tenants.create_key(db, "ward", Role.USER)
    key = key_info.id
    assert erasure.erase(v, log, f"key:{key}", {"cli": "dpo"})["subject"] == f"key:{key}"
