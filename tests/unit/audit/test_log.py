"""The audit log: appends, checkpoints, and detection of any tampering after a checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from sovllm.governance.audit.checkpoint import Checkpoint, CheckpointError, Signer, verify
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.audit.verify import (
    ExportError,
    Report,
    Row,
    check_checkpoints,
    check_leaves,
    export_lines,
    inclusion,
    verify_database,
    verify_export,
)
from sovllm.store.db import Database


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer.load_or_create(tmp_path / "audit" / "signing.key", "test-log")


def fill(db: Database, signer: Signer, n: int, checkpoint_every: int = 4) -> AuditLog:
    log = AuditLog(db, signer, "test-log", checkpoint_every=checkpoint_every)
    log.start()
    # One at a time, so that checkpoints fall every `checkpoint_every` entries.
    seqs = [log.append("request.begin", {"i": i}, f"req-{i}").result(timeout=30) for i in range(n)]
    assert seqs == list(range(n))
    log.close()
    return log


def test_key_file_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "k" / "signing.key"
    a = Signer.load_or_create(path, "x")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert Signer.load_or_create(path, "x").verifier == a.verifier


def test_signed_note_format_and_verification(signer: Signer) -> None:
    note = signer.sign(Checkpoint("test-log", 3, b"\x01" * 32))
    body, _, sig = note.partition("\n\n")
    assert body.split("\n") == ["test-log", "3", "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="]
    assert sig.startswith("\u2014 test-log ")
    assert verify(note, signer.verifier).size == 3
    forged = note.replace("\n3\n", "\n4\n")
    with pytest.raises(CheckpointError):
        verify(forged, signer.verifier)
    other = (
        Signer.load_or_create(Path(os.devnull).parent / "nonexistent" / "k", "other")
        if False
        else None
    )
    assert other is None


def test_appends_verify_and_checkpoints_are_signed(db: Database, signer: Signer) -> None:
    log = fill(db, signer, 10)
    report = verify_database(db, signer.verifier)
    assert report.ok, report.problems
    assert report.size == 10 and report.checkpoints == 3  # at 4, 8, and 10 on close
    assert log.latest_note() is not None
    proof = inclusion(db, "req-7")
    assert proof["tree_size"] == 10 and proof["entries"][0]["seq"] == 7  # type: ignore[index]


def test_an_edit_in_the_database_is_named(db: Database, signer: Signer) -> None:
    fill(db, signer, 9)
    with db.transaction() as s:
        body = s.execute(text("SELECT body FROM audit_entries WHERE seq = 5")).scalar_one()
        s.execute(text("UPDATE audit_entries SET body = :b WHERE seq = 5"),
                  {"b": body.replace('"i":5', '"i":6')})  # fmt: skip
    report = verify_database(db, signer.verifier)
    assert not report.ok and report.first_bad == 5


def test_a_deletion_in_the_database_is_named(db: Database, signer: Signer) -> None:
    fill(db, signer, 9)
    with db.transaction() as s:
        s.execute(text("DELETE FROM audit_entries WHERE seq = 3"))
    report = verify_database(db, signer.verifier)
    assert not report.ok and report.first_bad == 3


def test_a_checkpoint_from_another_log_is_a_clear_mismatch(
    db: Database, signer: Signer, tmp_path: Path
) -> None:
    fill(db, signer, 4)
    stranger = Signer.load_or_create(tmp_path / "other.key", "other-log")
    note = stranger.sign(Checkpoint("other-log", 4, b"\x00" * 32))
    report = verify_database(db, signer.verifier, against=note)
    assert not report.ok and "signature of test-log" in report.problems[0]


def test_export_verifies_offline_and_a_bad_line_is_named(db: Database, signer: Signer) -> None:
    fill(db, signer, 8)
    lines = list(export_lines(db, None, signer.verifier))
    assert verify_export(lines, signer.verifier).ok
    # Only the entries since a time, with the hashes of the earlier ones.
    with db.transaction() as s:
        t = s.execute(text("SELECT at FROM audit_entries WHERE seq = 5")).scalar_one()
    partial = list(export_lines(db, t, signer.verifier))
    assert json.loads(partial[0])["from_seq"] == 5
    assert verify_export(partial, signer.verifier).ok
    broken = [*lines[:3], "{not json", *lines[4:]]
    with pytest.raises(ExportError, match="line 4"):
        verify_export(broken, signer.verifier)
    assert json.dumps(lines).find(str(signer.secret)) == -1


# -- property: any tampering after a checkpoint is detected -----------------------------------


def _signed_log(signer: Signer, n: int) -> tuple[list[Row], list[str]]:
    from sovllm.governance.audit import merkle
    from sovllm.governance.audit.log import canonical

    rows = []
    for i in range(n):
        data = canonical({"v": 1, "seq": i, "kind": "k", "i": i})
        rows.append(Row(i, data.decode(), merkle.leaf_hash(data).hex()))
    leaves = [bytes.fromhex(r.leaf_hash) for r in rows]
    notes = [
        signer.sign(Checkpoint("test-log", size, merkle.root(leaves[:size])))
        for size in (n // 2, n)
    ]
    return rows, notes


def _verify(rows: list[Row], notes: list[str], signer: Signer) -> Report:
    report = Report()
    leaves = check_leaves(rows, 0, report)
    check_checkpoints(leaves, notes, signer.verifier, report)
    return report


tamper = st.sampled_from(["edit", "edit-and-rehash", "delete", "swap", "insert", "truncate"])


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(2, 40), how=tamper, data=st.data())
def test_any_tampering_is_detected(signer: Signer, n: int, how: str, data: st.DataObject) -> None:
    from sovllm.governance.audit import merkle

    rows, notes = _signed_log(signer, n)
    assert _verify(rows, notes, signer).ok
    i = data.draw(st.integers(0, n - 1))
    if how == "edit":
        rows[i] = Row(i, rows[i].body.replace('"k"', '"K"'), rows[i].leaf_hash)
    elif how == "edit-and-rehash":  # an attacker who recomputes the stored hash too
        body = rows[i].body.replace('"k"', '"K"')
        rows[i] = Row(i, body, merkle.leaf_hash(body.encode()).hex())
    elif how == "delete":
        del rows[i]
    elif how == "swap":
        j = (i + 1) % n
        if i == j:
            return
        rows[i], rows[j] = (
            Row(i, rows[j].body, rows[j].leaf_hash),
            Row(j, rows[i].body, rows[i].leaf_hash),
        )
    elif how == "insert":
        fake = f'{{"i":-1,"kind":"k","seq":{i},"v":1}}'
        rows = [*rows[:i], Row(i, fake, merkle.leaf_hash(fake.encode()).hex()),
                *[Row(r.seq + 1, r.body, r.leaf_hash) for r in rows[i:]]]  # fmt: skip
    elif how == "truncate":
        rows = rows[:i]
    report = _verify(rows, notes, signer)
    assert not report.ok, (how, i)
    if how in {"edit", "delete", "swap"}:
        assert report.first_bad == min(i, (i + 1) % n) if how == "swap" else report.first_bad == i
