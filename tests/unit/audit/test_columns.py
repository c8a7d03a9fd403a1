"""Every stored byte of the audit log is protected: each column of an entry row and of a
checkpoint row, edited one at a time, is caught by verify and by the offline verifier of an
export, and the first bad entry (or checkpoint) is named. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from sovllm.governance.audit import merkle
from sovllm.governance.audit.checkpoint import Checkpoint, CheckpointError, Signer
from sovllm.governance.audit.export import export_lines, verify_export
from sovllm.governance.audit.log import AuditLog, instant
from sovllm.governance.audit.lookup import IntegrityError, inclusion, search
from sovllm.governance.audit.report import Report
from sovllm.governance.audit.verify import verify_database
from sovllm.store import migrate
from sovllm.store.db import Database
from tests.conftest import fresh_database_url

BAD = 5


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer.load_or_create(tmp_path / "audit" / "signing.key", "test-log")


def fill(db: Database, signer: Signer, n: int = 10) -> None:
    log = AuditLog(db, signer, "test-log", checkpoint_every=4)
    log.start()
    for i in range(n):
        log.append("request.begin", {"i": i}, f"req-{i}").result(timeout=30)
    log.close()  # checkpoints at 4, 8 and 10


def edit(db: Database, sql: str, **params: object) -> None:
    with db.transaction() as s:
        assert s.execute(text(sql), params).rowcount == 1  # type: ignore[attr-defined]


def both(db: Database, signer: Signer) -> list[Report]:
    """The database's verdict and the offline verifier's on an export of it."""
    lines = list(export_lines(db, None, signer.verifier))
    return [verify_database(db, signer.verifier), verify_export(lines, signer.verifier)]


ENTRY_EDITS: dict[str, Callable[[Database], None]] = {
    "seq": lambda db: edit(db, "UPDATE audit_entries SET seq = 99 WHERE seq = :s", s=BAD),
    "at": lambda db: edit(db, "UPDATE audit_entries SET at = at + 0.000001 WHERE seq = :s", s=BAD),
    "kind": lambda db: edit(db, "UPDATE audit_entries SET kind = 'admin' WHERE seq = :s", s=BAD),
    "request_id": lambda db: edit(
        db, "UPDATE audit_entries SET request_id = 'req-0' WHERE seq = :s", s=BAD
    ),
    "request_id-null": lambda db: edit(
        db, "UPDATE audit_entries SET request_id = NULL WHERE seq = :s", s=BAD
    ),
    "body": lambda db: edit(
        db,
        "UPDATE audit_entries SET body = replace(body, :a, :b) WHERE seq = :s",
        a='"i":5',
        b='"i":6',
        s=BAD,
    ),
    "leaf_hash": lambda db: edit(
        db, "UPDATE audit_entries SET leaf_hash = :h WHERE seq = :s", h="00" * 32, s=BAD
    ),
    "body-erased": lambda db: edit(
        db, "UPDATE audit_entries SET body = NULL WHERE seq = :s", s=BAD
    ),
    "pruned_by": lambda db: edit(
        db, "UPDATE audit_entries SET pruned_by = 9 WHERE seq = :s", s=BAD
    ),
}


@pytest.mark.parametrize("column", list(ENTRY_EDITS))
def test_each_entry_column_edit_is_caught_and_named(
    db: Database, signer: Signer, column: str
) -> None:
    fill(db, signer)
    assert all(r.ok for r in both(db, signer))
    ENTRY_EDITS[column](db)
    for report in both(db, signer):
        assert not report.ok, column
        assert report.first_bad == BAD, (column, report.problems)
        assert f"first bad entry: {BAD}" in report.summary()


def _compact_of(leaves: list[bytes]) -> str:
    return json.dumps([[n, h.hex()] for n, h in merkle.extend([], leaves)])


CHECKPOINT_EDITS: dict[str, Callable[[Database, Signer], None]] = {
    "size": lambda db, _: edit(db, "UPDATE audit_checkpoints SET size = 7 WHERE size = 8"),
    "root": lambda db, _: edit(
        db, "UPDATE audit_checkpoints SET root = :r WHERE size = 8", r="ab" * 32
    ),
    "note-signature": lambda db, _: edit(
        db,
        "UPDATE audit_checkpoints SET note = replace(note, '\u2014 test-log ', "
        "'\u2014 test-log AAAA') WHERE size = 8",
    ),
    # A note validly signed by this log, but not of this row's size: its columns betray it.
    "note-swapped": lambda db, signer: edit(
        db,
        "UPDATE audit_checkpoints SET note = :n WHERE size = 8",
        n=signer.sign(Checkpoint("test-log", 4, _root_at(db, 4))),
    ),
    "compact": lambda db, _: edit(
        db,
        "UPDATE audit_checkpoints SET compact = :c WHERE size = 8",
        c=_compact_of([b"\x00" * 32] * 8),
    ),
}


def _root_at(db: Database, size: int) -> bytes:
    with db.transaction() as s:
        hashes = s.execute(text("SELECT leaf_hash FROM audit_entries ORDER BY seq")).scalars()
        return merkle.root([bytes.fromhex(h) for h in hashes][:size])


@pytest.mark.parametrize("column", list(CHECKPOINT_EDITS))
def test_each_checkpoint_column_edit_is_caught_and_named(
    db: Database, signer: Signer, column: str
) -> None:
    fill(db, signer)
    CHECKPOINT_EDITS[column](db, signer)
    for report in both(db, signer):
        assert not report.ok, column
        assert report.first_bad is None, report.problems  # no entry is to blame
        named = 4 if column == "note-swapped" else 8  # the note's own size, else the row's
        assert report.first_bad_checkpoint == named, (column, report.problems)
        assert f"first bad checkpoint: size {named}" in report.summary()


def test_the_checkpoint_columns_are_what_the_log_reads_next(db: Database, signer: Signer) -> None:
    """Why `compact` matters: the next checkpoint starts from it, so the log checks it against
    the row's signed note first and signs nothing over a forged range."""
    fill(db, signer, 8)
    CHECKPOINT_EDITS["compact"](db, signer)
    log = AuditLog(db, signer, "test-log")
    log.append("admin", {"x": 1}).result()
    with pytest.raises(CheckpointError, match="not one this log signed as it stands"):
        log.checkpoint()
    report = verify_database(db, signer.verifier)
    assert not report.ok and report.first_bad_checkpoint == 8


def test_lookups_refuse_rows_whose_columns_contradict_their_content(
    db: Database, signer: Signer
) -> None:
    fill(db, signer)
    edit(db, "UPDATE audit_entries SET request_id = 'req-3' WHERE seq = :s", s=BAD)
    with pytest.raises(IntegrityError, match=f"entry {BAD} is filed under request 'req-3'"):
        inclusion(db, "req-3")
    assert [e["seq"] for e in search(db, request_id="req-3")] == [3]
    with db.transaction() as s:
        at = s.execute(text("SELECT at FROM audit_entries WHERE seq = 2")).scalar_one()
    edit(db, "UPDATE audit_entries SET at = :t WHERE seq = :s", t=at + 3600, s=BAD)
    assert BAD not in [e["seq"] for e in search(db, since=at + 3000)]


def test_at_is_the_bodys_time_exactly(db: Database, signer: Signer) -> None:
    fill(db, signer, 3)
    with db.transaction() as s:
        rows = s.execute(text("SELECT at, body FROM audit_entries")).all()
    assert all(at == instant(json.loads(body)["time"]) for at, body in rows)


def test_migration_0006_makes_an_older_log_verify(database_url_any: str, signer: Signer) -> None:
    """A log written before 0006 (unrounded `at`, checkpoint `at`) verifies after upgrading."""
    import time

    from sovllm.governance.audit.log import canonical, utc

    db = Database(database_url_any)
    try:
        migrate.upgrade(db, "0005")
        leaves = []
        with db.transaction() as s:
            for i in range(3):
                at = time.time() + i / 7  # not a whole microsecond
                body = canonical(
                    {"v": 1, "seq": i, "time": utc(at), "kind": "admin", "request_id": None, "i": i}
                )
                leaves.append(merkle.leaf_hash(body))
                s.execute(
                    text(
                        "INSERT INTO audit_entries (seq, at, kind, request_id, body, leaf_hash) "
                        "VALUES (:s, :at, 'admin', NULL, :b, :h)"
                    ),
                    {"s": i, "at": at, "b": body.decode(), "h": leaves[-1].hex()},
                )
            s.execute(
                text(
                    "INSERT INTO audit_checkpoints (size, root, note, compact, at) "
                    "VALUES (3, :r, :n, :c, :at)"
                ),
                {
                    "r": merkle.root(leaves).hex(),
                    "c": _compact_of(leaves),
                    "at": time.time(),
                    "n": signer.sign(Checkpoint("test-log", 3, merkle.root(leaves))),
                },
            )
        migrate.upgrade(db)
        report = verify_database(db, signer.verifier)
        assert report.ok and (report.size, report.checkpoints) == (3, 1), report.problems
    finally:
        db.dispose()


def test_a_fresh_database_is_at_the_head_revision(tmp_path: Path) -> None:
    db = Database(fresh_database_url("sqlite", tmp_path, None))
    try:
        migrate.upgrade(db)
        assert migrate.current_revision(db) == migrate.head_revision() == "0012"
    finally:
        db.dispose()


def test_a_proof_on_a_truncated_log_is_a_clear_error(db: Database, signer: Signer) -> None:
    """Entries deleted under a signed checkpoint: `audit prove` names it, never an assertion."""
    fill(db, signer)  # 10 entries, the last checkpoint signed at 10

    def run(sql: str) -> None:
        with db.transaction() as s:
            s.execute(text(sql))

    run("DELETE FROM audit_entries WHERE seq >= 8")
    with pytest.raises(IntegrityError, match="signed at size 10: entries were removed"):
        inclusion(db, "req-3")
    run("DELETE FROM audit_entries WHERE seq = 2")
    run("DELETE FROM audit_checkpoints")  # now 7 leaves, and req-7's row indexes past them
    with pytest.raises(IntegrityError, match="entry 7 lies beyond the log's 7 entries"):
        inclusion(db, "req-7")
