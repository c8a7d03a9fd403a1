"""Verification of the audit log: every leaf, every stored column, every checkpoint, every
signature.

Works the same on the database and on an export file (export.py), and names the first bad entry
(or, for a checkpoint row, the first bad checkpoint). The columns stored beside an entry's body
for lookup (`at`, `kind`, `request_id`) are what search, prove and export read, so each is
checked against the hashed body (entry_checks.py); a pruned entry's kept columns are checked
against the digest in the hashed record of its prune. The checkpoints are checked in
checkpoint_checks.py.
"""

from __future__ import annotations

from sovllm.governance.audit.checkpoint import CheckpointError, Verifier, parse
from sovllm.governance.audit.checkpoint_checks import check_checkpoints, key_transitions
from sovllm.governance.audit.entry_checks import check_leaves
from sovllm.governance.audit.log import AuditLog
from sovllm.governance.audit.report import Report
from sovllm.governance.audit.rows import CheckpointRow, read_log
from sovllm.store.db import Database


def verify_database(
    db: Database, verifier: Verifier, against: str | None = None, head: str | None = None
) -> Report:
    """Verify the log in `db`; `against` is a checkpoint note from elsewhere (a witness's),
    `head` (a parsed note, Head.note) the one this host signed last, which the database must
    still hold (head.py)."""
    rows, checkpoints = read_log(db)
    report = Report()
    leaves = check_leaves(rows, 0, report)
    chain = key_transitions(((r.seq, r.body) for r in rows), report)
    extra = [against] if against else []
    if head is not None and not _stored(head, checkpoints):
        report.fail(
            "the database no longer holds the checkpoint this host signed last "
            f"(size {parse(head)[0].size}): checkpoints were deleted or replaced"
        )
        extra.append(head)  # and the tree is checked against it, to name what changed
    check_checkpoints(leaves, [*checkpoints, *extra], verifier, report, chain)
    return report


def verify_log(log: AuditLog, verifier: Verifier, against: str | None = None) -> Report:
    """verify_database on `log`'s database, checked against this host's last checkpoint too;
    an unreadable one is a failure that names its file."""
    try:
        head = log.head_note()
    except CheckpointError as exc:
        report = verify_database(log.db, verifier, against)
        report.fail(str(exc))
        return report
    return verify_database(log.db, verifier, against, head)


def _stored(note: str, rows: list[CheckpointRow]) -> bool:
    checkpoint = parse(note)[0]
    root = checkpoint.root.hex()
    return any(row.size == checkpoint.size and row.root == root for row in rows)
