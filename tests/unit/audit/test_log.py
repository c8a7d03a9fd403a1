"""The audit log: appends, checkpoints, and detection of any tampering after a checkpoint."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from sovllm.governance.audit.checkpoint import Checkpoint, CheckpointError, Signer, verify
from sovllm.governance.audit.checkpoint_checks import check_checkpoints
from sovllm.governance.audit.entry_checks import check_leaves
from sovllm.governance.audit.export import ExportError, export_lines, verify_export
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.audit.lookup import inclusion
from sovllm.governance.audit.report import Report
from sovllm.governance.audit.rows import Columns, Row
from sovllm.governance.audit.verify import verify_database
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


def test_signed_note_format_and_verification(signer: Signer, tmp_path: Path) -> None:
    note = signer.sign(Checkpoint("test-log", 3, b"\x01" * 32))
    body, _, sig = note.partition("\n\n")
    assert body.split("\n") == ["test-log", "3", "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="]
    assert sig.startswith("\u2014 test-log ")
    assert verify(note, signer.verifier).size == 3
    forged = note.replace("\n3\n", "\n4\n")
    with pytest.raises(CheckpointError, match="does not verify"):
        verify(forged, signer.verifier)
    # Another key under the same name: its key hash differs, so the note is not ours.
    impostor = Signer.load_or_create(tmp_path / "impostor.key", "test-log")
    assert impostor.verifier.public != signer.verifier.public
    with pytest.raises(CheckpointError, match="no signature of test-log"):
        verify(impostor.sign(Checkpoint("test-log", 3, b"\x01" * 32)), signer.verifier)


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
        s.execute(
            text("UPDATE audit_entries SET body = :b WHERE seq = 5"),
            {"b": body.replace('"i":5', '"i":6')},
        )
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


def test_export_verifies_offline_and_a_bad_line_is_named(
    db: Database, signer: Signer, tmp_path: Path
) -> None:
    key_file = tmp_path / "audit" / "signing.key"
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
    # No secret in any encoding it could take: the keyed-hash secret and the signing seed.
    seed = base64.b64decode(key_file.read_text())
    assert len(seed) == 32
    assert leaked_secrets("\n".join(lines), signer.secret, seed) == []
    # The check itself finds a secret where there is one.
    planted = "\n".join([*lines, json.dumps({"note": base64.b64encode(seed).decode()})])
    assert "base64" in leaked_secrets(planted, signer.secret, seed)


def leaked_secrets(text: str, *secrets: bytes) -> list[str]:
    """The encodings in which any of `secrets` appears in `text`."""
    data = text.encode()
    found = []
    for secret in secrets:
        for name, enc in (
            ("raw", secret),
            ("hex", secret.hex().encode()),
            ("HEX", secret.hex().upper().encode()),
            ("base64", base64.b64encode(secret).rstrip(b"=")),
            ("base64url", base64.urlsafe_b64encode(secret).rstrip(b"=")),
            ("latin-1", secret.decode("latin-1").encode()),
        ):
            if enc in data:
                found.append(name)
    return found


# -- property: any tampering after a checkpoint is detected -----------------------------------


def _signed_log(signer: Signer, n: int) -> tuple[list[Row], list[str]]:
    from sovllm.governance.audit import merkle
    from sovllm.governance.audit.log import canonical, stamp

    rows = []
    for i in range(n):
        at, time_text = stamp(1_700_000_000.123456 + i)
        rid = f"req-{i}"
        data = canonical(
            {"v": 1, "seq": i, "kind": "k", "i": i, "time": time_text, "request_id": rid}
        )
        rows.append(Row(i, data.decode(), merkle.leaf_hash(data).hex(), Columns(at, "k", rid)))
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


tamper = st.sampled_from(
    ["edit", "edit-and-rehash", "delete", "swap", "insert", "truncate", "at", "kind", "request_id"]
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(2, 40), how=tamper, data=st.data())
def test_any_tampering_is_detected(signer: Signer, n: int, how: str, data: st.DataObject) -> None:
    from sovllm.governance.audit import merkle

    rows, notes = _signed_log(signer, n)
    assert _verify(rows, notes, signer).ok
    i = data.draw(st.integers(0, n - 1))
    row = rows[i]
    assert row.body is not None and row.columns is not None
    if how == "edit":
        rows[i] = dataclasses.replace(row, body=row.body.replace('"k"', '"K"'))
    elif how == "edit-and-rehash":  # an attacker who recomputes the stored hash too
        body = row.body.replace('"k"', '"K"')
        rows[i] = dataclasses.replace(
            row, body=body, leaf_hash=merkle.leaf_hash(body.encode()).hex()
        )
    elif how in {"at", "kind", "request_id"}:  # a column repeated from the body, for lookup
        c = row.columns
        columns = {
            "at": Columns(c.at + 1e-6, c.kind, c.request_id),
            "kind": Columns(c.at, "K", c.request_id),
            "request_id": Columns(c.at, c.kind, "someone-else"),
        }[how]
        rows[i] = dataclasses.replace(row, columns=columns)
    elif how == "delete":
        del rows[i]
    elif how == "swap":
        j = (i + 1) % n
        if i == j:
            return
        rows[i], rows[j] = dataclasses.replace(rows[j], seq=i), dataclasses.replace(row, seq=j)
    elif how == "insert":
        fake = row.body.replace('"i":', '"i":-1000')
        rows = [
            *rows[:i],
            dataclasses.replace(row, body=fake, leaf_hash=merkle.leaf_hash(fake.encode()).hex()),
            *[dataclasses.replace(r, seq=r.seq + 1) for r in rows[i:]],
        ]
    elif how == "truncate":
        rows = rows[:i]
    report = _verify(rows, notes, signer)
    assert not report.ok, (how, i)
    if how in {"edit", "delete", "swap", "at", "kind", "request_id"}:
        assert report.first_bad == min(i, (i + 1) % n) if how == "swap" else report.first_bad == i
