"""Verification of the audit log: every leaf, every checkpoint, every signature.

Works the same on the database and on an export file, and names the first bad entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sovllm.governance.audit import merkle
from sovllm.governance.audit.checkpoint import CheckpointError, Verifier, verify
from sovllm.store.db import Database
from sovllm.store.raw import SQL, raw_transaction

EXPORT_SCHEMA = "sovllm-audit-export/1"


@dataclass(frozen=True)
class Row:
    seq: int
    body: str
    leaf_hash: str


@dataclass
class Report:
    size: int = 0
    checkpoints: int = 0
    first_bad: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, message: str, entry: int | None = None) -> None:
        self.problems.append(message)
        if entry is not None and (self.first_bad is None or entry < self.first_bad):
            self.first_bad = entry

    def summary(self) -> str:
        if self.ok:
            return f"OK: {self.size} entries, {self.checkpoints} signed checkpoint(s) verified"
        where = f"; first bad entry: {self.first_bad}" if self.first_bad is not None else ""
        return f"FAILED{where}: {self.problems[0]}"


def check_leaves(rows: Sequence[Row], start: int, report: Report) -> list[bytes]:
    """Recompute each leaf from its body; check sequence numbers run without a gap."""
    leaves: list[bytes] = []
    for i, row in enumerate(rows, start=start):
        if row.seq != i:
            report.fail(
                f"entry {i} is missing: the log goes from {i - 1} to {row.seq} "
                "(deleted or reordered entries)",
                i,
            )
            return leaves
        data = row.body.encode()
        leaf = merkle.leaf_hash(data)
        if leaf.hex() != row.leaf_hash:
            report.fail(f"entry {i} was altered: its content does not match its hash", i)
        try:
            claimed = json.loads(data)["seq"]
        except (ValueError, KeyError, TypeError):
            claimed = None
        if claimed != i:
            report.fail(f"entry {i} holds the content of entry {claimed}: entries were moved", i)
        leaves.append(leaf)
    report.size = start + len(leaves)
    return leaves


def check_checkpoints(
    leaves: Sequence[bytes], notes: Iterable[str], verifier: Verifier, report: Report
) -> None:
    """Each note is signed by `verifier` and its root is the tree's root at its size."""
    checked: list[tuple[int, bytes]] = []
    parsed = []
    for note in notes:
        try:
            cp = verify(note, verifier)
        except CheckpointError as exc:
            report.fail(f"checkpoint: {exc}")
            continue
        if cp.origin != verifier.name:
            report.fail(f"checkpoint is from another log ({cp.origin!r}, not {verifier.name!r})")
            continue
        parsed.append(cp)
    parsed.sort(key=lambda c: c.size)
    roots = merkle.roots_at(leaves, [c.size for c in parsed if c.size <= len(leaves)])
    previous = 0
    for cp in parsed:
        if cp.size > len(leaves):
            report.fail(
                f"the log has {len(leaves)} entries but a checkpoint was signed at size "
                f"{cp.size}: entries from {len(leaves)} on were removed",
                len(leaves),
            )
            continue
        if roots[cp.size] != cp.root:
            report.fail(
                f"the tree at size {cp.size} does not match its signed checkpoint: an entry "
                f"between {previous} and {cp.size - 1} was changed, removed or inserted",
                # Only a bound: an entry named by its own hash above is more precise.
                previous if report.first_bad is None else None,
            )
            continue
        if checked:
            # Between consecutive checkpoints, the RFC 9162 consistency proof must verify.
            old_size, old_root = checked[-1]
            if old_size and cp.size > old_size:
                proof = merkle.consistency_proof(old_size, leaves[: cp.size])
                if not merkle.verify_consistency(old_size, cp.size, old_root, cp.root, proof):
                    report.fail(f"checkpoints {old_size} and {cp.size} are inconsistent")
        checked.append((cp.size, cp.root))
        previous = cp.size
        report.checkpoints += 1


_ROWS = SQL("SELECT seq, body, leaf_hash FROM audit_entries ORDER BY seq")
_NOTES = SQL("SELECT note FROM audit_checkpoints ORDER BY size")


def verify_database(db: Database, verifier: Verifier, against: str | None = None) -> Report:
    with raw_transaction(db) as tx:
        rows = [Row(int(s), str(b), str(h)) for s, b, h in tx.all(_ROWS, {})]
        notes = [str(n) for (n,) in tx.all(_NOTES, {})]
    report = Report()
    leaves = check_leaves(rows, 0, report)
    check_checkpoints(leaves, [*notes, *([against] if against else [])], verifier, report)
    return report


# -- export ----------------------------------------------------------------------------------


class ExportError(Exception):
    pass


def export_lines(db: Database, since: float | None, verifier: Verifier) -> Iterable[str]:
    """JSONL: a header with the hashes of the entries before `since`, then entries, notes."""
    with raw_transaction(db) as tx:
        rows = tx.all(SQL("SELECT seq, at, body, leaf_hash FROM audit_entries ORDER BY seq"), {})
        notes = [str(n) for (n,) in tx.all(_NOTES, {})]
    first = next((i for i, r in enumerate(rows) if since is None or r[1] >= since), len(rows))
    yield json.dumps({
        "schema": EXPORT_SCHEMA, "from_seq": first, "verifier_key": verifier.encode(),
        "prefix_leaf_hashes": [str(r[3]) for r in rows[:first]],
    })  # fmt: skip
    for seq, _at, body, leaf in rows[first:]:
        yield json.dumps({"seq": int(seq), "body": str(body), "leaf_hash": str(leaf)})
    for note in notes:
        yield json.dumps({"checkpoint": note})


def verify_export(
    lines: Iterable[str], verifier: Verifier, checkpoint: str | None = None
) -> Report:
    """Verify an export with no database; a malformed line is named."""
    report = Report()
    prefix: list[bytes] = []
    start = 0
    rows: list[Row] = []
    notes: list[str] = []
    n = 0
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if n == 1:
                if obj.get("schema") != EXPORT_SCHEMA:
                    raise ExportError(f"line 1: not a {EXPORT_SCHEMA} export")
                start = int(obj["from_seq"])
                prefix = [bytes.fromhex(h) for h in obj["prefix_leaf_hashes"]]
                if len(prefix) != start:
                    raise ExportError("line 1: from_seq does not match the prefix hashes")
            elif "checkpoint" in obj:
                notes.append(str(obj["checkpoint"]))
            else:
                rows.append(Row(int(obj["seq"]), str(obj["body"]), str(obj["leaf_hash"])))
        except ExportError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ExportError(f"line {n}: malformed ({exc.__class__.__name__}: {exc})") from None
    if n == 0:
        raise ExportError("the export is empty")
    leaves = prefix + check_leaves(rows, start, report)
    check_checkpoints(leaves, [*notes, *([checkpoint] if checkpoint else [])], verifier, report)
    return report


def inclusion(db: Database, request_id: str) -> dict[str, object]:
    """Inclusion proofs of a request's entries in the latest signed tree that holds them."""
    with raw_transaction(db) as tx:
        leaves = [bytes.fromhex(h) for (h,) in tx.all(
            SQL("SELECT leaf_hash FROM audit_entries ORDER BY seq"), {})]  # fmt: skip
        mine = tx.all(
            SQL("SELECT seq, body FROM audit_entries WHERE request_id = :rid ORDER BY seq"),
            {"rid": request_id},
        )
        latest = tx.one(
            SQL("SELECT size, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1"), {}
        )
    if not mine:
        raise LookupError(f"no audit entry for request {request_id!r}")
    size = int(latest[0]) if latest and int(latest[0]) > int(mine[-1][0]) else len(leaves)
    tree = leaves[:size]
    root = merkle.root(tree)
    entries = []
    for seq, body in mine:
        proof = merkle.inclusion_proof(int(seq), tree)
        assert merkle.verify_inclusion(int(seq), size, tree[int(seq)], proof, root)
        entries.append({"seq": int(seq), "body": json.loads(body), "leaf_hash": tree[int(seq)].hex(),
                        "proof": [p.hex() for p in proof]})  # fmt: skip
    signed = latest is not None and int(latest[0]) == size
    return {
        "request_id": request_id, "tree_size": size, "root_hash": root.hex(),
        "checkpoint": str(latest[1]) if signed and latest else None, "entries": entries,
    }  # fmt: skip


def search(
    db: Database,
    request_id: str | None = None,
    tenant: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 100,
) -> list[dict[str, object]]:
    """Entries by request id, tenant or time, newest first, with their sequence numbers."""
    clauses: list[str] = []
    params: dict[str, object] = {}
    if request_id is not None:
        clauses.append("request_id = :rid")
        params["rid"] = request_id
    if since is not None:
        clauses.append("at >= :since")
        params["since"] = since
    if until is not None:
        clauses.append("at < :until")
        params["until"] = until
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    # The tenant lives inside the JSON body: filter after reading, with a bounded scan.
    scan = limit if tenant is None else limit * 20
    sql = SQL(f"SELECT seq, body FROM audit_entries {where} ORDER BY seq DESC LIMIT {int(scan)}")
    with raw_transaction(db) as tx:
        rows = tx.all(sql, params)
    out: list[dict[str, object]] = []
    for seq, body in rows:
        entry = json.loads(body)
        who = entry.get("principal") or entry.get("actor") or {}
        if tenant is not None and who.get("tenant") != tenant:
            continue
        out.append({"seq": int(seq), "entry": entry})
        if len(out) >= limit:
            break
    return out


def latest_of_kind(db: Database, kind: str) -> dict[str, Any] | None:
    """The newest entry of one kind (e.g. the last `audit.verify`), or None."""
    sql = SQL("SELECT body FROM audit_entries WHERE kind = :kind ORDER BY seq DESC LIMIT 1")
    with raw_transaction(db) as tx:
        row = tx.one(sql, {"kind": kind})
    if row is None:
        return None
    entry: dict[str, Any] = json.loads(row[0])
    return entry
