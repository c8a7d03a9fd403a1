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

from sovllm.governance.audit.checkpoint import Verifier
from sovllm.governance.audit.checkpoint_checks import check_checkpoints, key_transitions
from sovllm.governance.audit.entry_checks import check_leaves
from sovllm.governance.audit.report import Report
from sovllm.governance.audit.rows import read_log
from sovllm.store.db import Database


def verify_database(db: Database, verifier: Verifier, against: str | None = None) -> Report:
    """Verify the log in `db`; `against` is a checkpoint note from elsewhere (a witness's)."""
    rows, checkpoints = read_log(db)
    report = Report()
    leaves = check_leaves(rows, 0, report)
    chain = key_transitions(((r.seq, r.body) for r in rows), report)
    extra = [against] if against else []
    check_checkpoints(leaves, [*checkpoints, *extra], verifier, report, chain)
    return report
