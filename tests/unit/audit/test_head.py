"""This host's last signed checkpoint, kept outside the database (governance/audit/head.py):
whoever can write the database but holds no key cannot delete the checkpoints, rewrite the log
into a self-consistent tree and have the server sign it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import text

from sovllm.config import load_settings
from sovllm.governance.audit import merkle, open_audit
from sovllm.governance.audit.checkpoint import CheckpointError, parse
from sovllm.governance.audit.head import FILE_NAME
from sovllm.governance.audit.log import AuditLog, canonical
from sovllm.governance.audit.verify import verify_database, verify_log
from sovllm.store.db import Database
from sovllm.store.migrate import upgrade


@pytest.fixture
def log(db: Database, tmp_path: Path) -> AuditLog:
    audit = open_audit(load_settings(None, data_dir=tmp_path), db)
    for i in range(6):
        audit.append("request.begin", {"reason": f"entry {i}"}, f"req-{i}").result(timeout=30)
    audit.checkpoint()
    return audit


def head_file(log: AuditLog) -> Path:
    assert log.head is not None
    return log.head.path


def count_checkpoints(db: Database) -> int:
    with db.read() as s:
        return int(s.execute(text("SELECT count(*) FROM audit_checkpoints")).scalar_one())


def rewrite(db: Database, seq: int, reason: str) -> None:
    """What a database-only writer can do: a new body and its matching leaf hash."""
    with db.transaction() as s:
        (raw,) = s.execute(text("SELECT body FROM audit_entries WHERE seq = :s"), {"s": seq}).one()
        body = json.loads(raw)
        body["reason"] = reason
        data = canonical(body)
        leaf = hashlib.sha256(b"\x00" + data).hexdigest()
        s.execute(
            text("UPDATE audit_entries SET body = :b, leaf_hash = :h WHERE seq = :s"),
            {"b": data.decode() if isinstance(raw, str) else data, "h": leaf, "s": seq},
        )


def test_each_checkpoint_signed_here_is_kept_outside_the_database(
    log: AuditLog, tmp_path: Path
) -> None:
    kept = head_file(log).read_text()
    assert kept == log.latest_note()
    assert parse(kept)[0].size == 7  # the pseudonym key's entry, then six
    assert verify_log(log, log.signer.verifier).summary() == (
        "OK: 7 entries, 1 signed checkpoint(s) verified"
    )


def test_checkpoints_deleted_and_an_entry_rewritten_are_caught_and_not_signed_over(
    log: AuditLog, db: Database, tmp_path: Path
) -> None:
    with db.transaction() as s:
        s.execute(text("DELETE FROM audit_checkpoints"))
    rewrite(db, 3, "routine maintenance")
    # The database alone is self-consistent again: that is the attack.
    assert verify_database(db, log.signer.verifier).ok
    report = verify_log(log, log.signer.verifier)
    assert not report.ok
    assert report.problems[0] == (
        "the database no longer holds the checkpoint this host signed last (size 7): "
        "checkpoints were deleted or replaced"
    )
    assert "does not match its signed checkpoint: an entry between 0 and 6" in report.problems[1]
    with pytest.raises(CheckpointError, match="no longer holds the checkpoint this host signed"):
        log.checkpoint()
    log.append("request.begin", {"reason": "later"}, "req-later").result(timeout=30)
    with pytest.raises(CheckpointError, match=str(head_file(log))):
        log.checkpoint()
    assert count_checkpoints(db) == 0


def test_a_truncated_log_with_its_checkpoints_removed_is_caught(
    log: AuditLog, db: Database
) -> None:
    with db.transaction() as s:
        s.execute(text("DELETE FROM audit_checkpoints"))
        s.execute(text("DELETE FROM audit_entries WHERE seq >= 5"))
    report = verify_log(log, log.signer.verifier)
    assert not report.ok and report.first_bad == 5
    assert "a checkpoint was signed at size 7: entries from 5 on were removed" in report.problems[1]


def test_checkpoints_only_deleted_are_reported_though_the_entries_match(
    log: AuditLog, db: Database
) -> None:
    with db.transaction() as s:
        s.execute(text("DELETE FROM audit_checkpoints"))
    report = verify_log(log, log.signer.verifier)
    assert report.problems == [
        "the database no longer holds the checkpoint this host signed last (size 7): "
        "checkpoints were deleted or replaced"
    ]


def test_a_checkpoint_signed_by_another_process_on_the_database_is_followed(
    log: AuditLog, db: Database, tmp_path: Path
) -> None:
    """Another gateway (its own data folder) signs on: this host's older checkpoint is still in
    the database, so this host signs on too; the head never moves back."""
    keys = tmp_path / "other" / "audit"
    keys.mkdir(parents=True)
    for name in ("signing.key", "pseudonym.key"):  # the deployment's keys, mounted in both
        shutil.copy(tmp_path / "audit" / name, keys / name)
    other = open_audit(load_settings(None, data_dir=tmp_path / "other"), db)
    other.append("request.begin", {"reason": "other"}, "req-o").result(timeout=30)
    assert parse(other.checkpoint())[0].size == 8
    log.append("request.begin", {"reason": "here"}, "req-h").result(timeout=30)
    assert parse(log.checkpoint())[0].size == 9
    log.head.keep(other.head_note())  # type: ignore[union-attr,arg-type]
    assert parse(head_file(log).read_text())[0].size == 9
    assert head_file(other).parent != head_file(log).parent
    assert verify_log(log, log.signer.verifier).ok


def test_an_unreadable_head_is_a_failure_that_names_its_file(log: AuditLog, tmp_path: Path) -> None:
    head_file(log).write_text("not a note")
    report = verify_log(log, log.signer.verifier)
    assert not report.ok and str(head_file(log)) in report.summary()
    with pytest.raises(CheckpointError, match="is not a signed checkpoint"):
        log.checkpoint()


def test_a_host_without_the_file_trusts_the_log_as_it_finds_it(
    log: AuditLog, db: Database, tmp_path: Path
) -> None:
    """The documented limit: a new host (or a restore) has nothing to compare with."""
    head_file(log).unlink()
    with db.transaction() as s:
        s.execute(text("DELETE FROM audit_checkpoints"))
    assert verify_log(log, log.signer.verifier).ok
    assert parse(log.checkpoint())[0].size == 7
    assert head_file(log).is_file()


def test_the_unsigned_subtrees_of_the_latest_checkpoint_cannot_carry_a_rewrite(
    log: AuditLog, db: Database
) -> None:
    """The stored compact range is what the next checkpoint extends, and it is not signed: a
    database writer who rewrites an entry and sets the range to the rewritten tree's gets
    nothing signed over it."""
    rewrite(db, 3, "forged")
    with db.transaction() as s:
        leaves = [
            bytes.fromhex(h)
            for (h,) in s.execute(text("SELECT leaf_hash FROM audit_entries ORDER BY seq"))
        ]
        forged: merkle.Compact = []
        merkle.extend(forged, leaves)
        s.execute(
            text("UPDATE audit_checkpoints SET compact = :c WHERE size = 7"),
            {"c": json.dumps([[n, h.hex()] for n, h in forged])},
        )
    log.append("request.begin", {"reason": "later"}, "req-later").result(timeout=30)
    with pytest.raises(CheckpointError, match="not one this log signed as it stands"):
        log.checkpoint()
    assert count_checkpoints(db) == 1
    assert not verify_log(log, log.signer.verifier).ok


def test_another_database_under_the_same_data_folder_is_not_taken_for_tampering(
    log: AuditLog, tmp_path: Path
) -> None:
    """Each database has its own file: a data folder used with a new database (a reset, a
    move to PostgreSQL, a second configuration) signs on, trusting that log as it finds it."""
    other = Database(f"sqlite:///{tmp_path / 'other.db'}")
    upgrade(other)
    try:
        fresh = open_audit(load_settings(None, data_dir=tmp_path), other)
        fresh.append("request.begin", {"reason": "new"}, "req-new").result(timeout=30)
        assert parse(fresh.checkpoint())[0].size == 2
        assert verify_log(fresh, fresh.signer.verifier).ok
        assert head_file(fresh) != head_file(log) and head_file(log).is_file()
        assert head_file(log).name.startswith(FILE_NAME + ".")
    finally:
        other.dispose()
